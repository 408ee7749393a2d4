"""Weight-only quantized dense layer: int8 or float8 (e4m3) weights with one float32 scale per output
channel; activations stay in the compute dtype.

`QuantizedDense` replaces `nnx.Linear` / `nnx.LinearGeneral` (same parameter names `kernel` and
`bias`, plus `scale`), so a quantized checkpoint keeps the float checkpoint's key layout:

    kernel  [*in_features, *out_features]  int8 | float8_e4m3fn   logical names as the float kernel
    scale   [*out_features]                float32                the kernel's output-axis names
    bias    [*out_features]                param dtype            (when used)

The product is computed as ``(x @ kernel.astype(dtype)) * scale``: every int8 and e4m3 value is exact in
bfloat16, so the matmul runs at the compute dtype's speed and the scale is applied once per output
channel instead of dequantizing the whole weight. The scale's logical names are the output axes'
names ("heads", "kv", "embed", "mlp", ...), which every network's rules table already maps, so the scale
is sharded like the output side of its kernel (and gets the leading "layers" axis in a stacked block).

Why not qwix (0.1.8, evaluated with flax 0.12.8): its NNX path (`qwix.quantize_model` + `PtqProvider`)
intercepts `dot_general` while running the model once and creates the quantized weights on the module
that made the call. Inside our `nnx.scan` layer stacks that module is the per-layer slice: qwix then
fails deriving the scale's sharding (`AssertionError: shape=(256, 2, 384) spec=('layers', 'embed',
'heads', 'kv')`: the stacked "layers" name against the sliced shape), and the unrolled path
(`scan_layers=False`) fails the same way on its per-layer `nnx.merge` copies, whose new variables would
not reach the stacked state anyway. It also needs a float model in memory to run before the quantized
one exists, where restore must build the quantized model abstractly and read straight into shards.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["QUANTIZE_MODES", "QuantizedDense", "quantized_dtype", "check_quantize_mode", "quantize_kernel"]

# "none": float weights; "int8": symmetric int8 in [-127, 127]; "fp8": float8 e4m3 (max 448).
QUANTIZE_MODES = ("none", "int8", "fp8")
_QMAX = {"int8": 127.0, "fp8": 448.0}


def check_quantize_mode(mode: str) -> str:
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize mode {mode!r}; expected one of {', '.join(QUANTIZE_MODES)}")
    return mode


def quantized_dtype(mode: str):
    """The stored weight dtype of a quantize mode ("int8" -> int8, "fp8" -> float8_e4m3fn)."""
    check_quantize_mode(mode)
    if mode == "none":
        raise ValueError("quantize mode 'none' has no quantized dtype")
    return jnp.int8 if mode == "int8" else jnp.float8_e4m3fn


def quantize_kernel(kernel, num_in_axes: int, mode: str, *, leading: int = 0):
    """(quantized kernel, float32 scale) of a float kernel [*lead, *in, *out]: one scale per output
    channel (and per leading index, e.g. per layer of a stack) = max |w| over the input axes / qmax.
    Works on NumPy arrays (conversion, on the host) and on jax arrays (restore, on the devices)."""
    xp = np if isinstance(kernel, np.ndarray) else jnp
    qdtype = quantized_dtype(mode)
    w = kernel.astype(xp.float32)
    in_axes = tuple(range(leading, leading + num_in_axes))
    amax = xp.max(xp.abs(w), axis=in_axes, keepdims=True)
    # amax * (1 / qmax) rather than amax / qmax: XLA turns a division by a constant into this product,
    # so NumPy (conversion) and jax (restore) give the same bits.
    scale = xp.where(amax > 0, amax * np.float32(1.0 / _QMAX[mode]), 1.0).astype(xp.float32)
    scaled = w * (1.0 / scale)  # (XLA rewrites a division by a broadcast into this product, so NumPy does it too)
    if mode == "int8":
        q = xp.clip(xp.round(scaled), -127, 127).astype(qdtype)
    else:
        q = xp.clip(scaled, -448.0, 448.0).astype(qdtype)  # round-to-nearest-even into e4m3
    return q, xp.squeeze(scale, axis=in_axes)


def _logical(init, names):
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)  # as `layers.logical`


class QuantizedDense(nnx.Module):
    """A dense layer from the input axes `axis` of x to `out_features`, with quantized weights."""

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        *,
        mode: str,
        names: Sequence[str | None],
        axis: int | Sequence[int] = -1,
        use_bias: bool,
        dtype,
        param_dtype,
    ):
        self.in_features = (in_features,) if isinstance(in_features, int) else tuple(in_features)
        self.out_features = (out_features,) if isinstance(out_features, int) else tuple(out_features)
        self.axis = (axis,) if isinstance(axis, int) else tuple(axis)
        if len(self.axis) != len(self.in_features):
            raise ValueError(f"axis {self.axis} must name one input axis per in_features {self.in_features}")
        if len(names) != len(self.in_features) + len(self.out_features):
            raise ValueError(f"names {tuple(names)} must name every kernel axis {self.in_features + self.out_features}")
        self.mode = check_quantize_mode(mode)
        self.dtype = dtype
        out_names = tuple(names[len(self.in_features) :])
        shape = self.in_features + self.out_features
        key = jax.random.key(0)  # constant initialisers: the values always come from a float model
        self.kernel = nnx.Param(_logical(nnx.initializers.zeros_init(), names)(key, shape, quantized_dtype(mode)))
        self.scale = nnx.Param(_logical(nnx.initializers.ones_init(), out_names)(key, self.out_features, jnp.float32))
        self.bias = (
            nnx.Param(_logical(nnx.initializers.zeros_init(), out_names)(key, self.out_features, param_dtype))
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        n_in = len(self.in_features)
        x_axes = tuple(a % x.ndim for a in self.axis)
        y = jax.lax.dot_general(
            x.astype(dtype),
            self.kernel[...].astype(dtype),  # exact: int8 and e4m3 values are representable in bf16
            ((x_axes, tuple(range(n_in))), ((), ())),
            precision=jax.lax.Precision.HIGHEST,
        )  # [..., *out_features]
        y = y * self.scale[...].astype(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y
