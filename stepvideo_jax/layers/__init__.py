"""Small building blocks shared by every network: logically-named parameters, norms, embeddings.

Parameters are annotated with *logical* axis names only (``("embed", "heads")``); the mapping from
logical names to mesh axes lives in one rules table (see ``stepvideo_jax.sharding``). Eager sharding
is switched off per parameter so that building a model never needs a mesh: shardings are applied by
jit out-shardings (``nnx.eval_shape`` + ``jax.jit``) or by the Orbax restore.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stepvideo_jax.layers.quantized import QUANTIZE_MODES, QuantizedDense

__all__ = [
    "logical",
    "dense",
    "dense_general",
    "layer_norm",
    "rms_norm",
    "sinusoidal_embedding",
    "gelu_tanh",
    "NORM_DTYPE",
    "run_layer_stack",
    "QuantizedDense",
    "QUANTIZE_MODES",
]

# Norm statistics are always computed in float32, as the release does (`x.float()` in its RMSNorm
# and LayerNorm in float32 parameters).
NORM_DTYPE = jnp.float32


def logical(init, names: Sequence[str | None]):
    """Wraps an initializer so the created `nnx.Param` carries logical axis names (no eager sharding)."""
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def dense(
    in_features: int,
    out_features: int,
    *,
    names: tuple[str | None, str | None],
    use_bias: bool,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    kernel_init=nnx.initializers.lecun_normal(),
    quantize: str = "none",
) -> nnx.Linear | QuantizedDense:
    """`nnx.Linear` with logical axis names on kernel (in, out) and bias (out,); with `quantize`
    ("int8" / "fp8") a weight-only `QuantizedDense` with the same names."""
    if quantize != "none":
        return QuantizedDense(
            in_features,
            out_features,
            mode=quantize,
            names=names,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
        )
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=logical(kernel_init, names),
        bias_init=logical(nnx.initializers.zeros_init(), (names[1],)),
        precision=jax.lax.Precision.HIGHEST,
        rngs=rngs,
    )


def dense_general(
    in_features: int,
    out_features: tuple[int, ...],
    *,
    names: tuple[str | None, ...],
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    axis: int = -1,
    use_bias: bool = False,
    kernel_init=nnx.initializers.lecun_normal(),
    quantize: str = "none",
) -> nnx.LinearGeneral | QuantizedDense:
    """`nnx.LinearGeneral` from one input axis to several output axes (e.g. (heads, head_dim)); with
    `quantize` ("int8" / "fp8") a weight-only `QuantizedDense` with the same names."""
    if quantize != "none":
        return QuantizedDense(
            in_features,
            out_features,
            mode=quantize,
            names=names,
            axis=axis,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
        )
    return nnx.LinearGeneral(
        in_features,
        out_features,
        axis=axis,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=logical(kernel_init, names),
        bias_init=logical(nnx.initializers.zeros_init(), names[1:]),
        precision=jax.lax.Precision.HIGHEST,
        rngs=rngs,
    )


def layer_norm(x: jax.Array, eps: float, scale: jax.Array | None = None, bias: jax.Array | None = None) -> jax.Array:
    """LayerNorm over the last axis, statistics in float32, result in x's dtype."""
    xf = x.astype(NORM_DTYPE)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale.astype(NORM_DTYPE)
    if bias is not None:
        y = y + bias.astype(NORM_DTYPE)
    return y.astype(x.dtype)


def rms_norm(x: jax.Array, eps: float, weight: jax.Array | None = None) -> jax.Array:
    """RMSNorm as released: normalise in float32, cast back to x's dtype, then multiply the weight."""
    xf = x.astype(NORM_DTYPE)
    y = (xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)).astype(x.dtype)
    if weight is not None:
        y = y * weight.astype(x.dtype)
    return y


def sinusoidal_embedding(
    t: jax.Array, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0, max_period: float = 10000.0
) -> jax.Array:
    """Sinusoidal embedding of a [N] vector -> [N, dim] (float32); cos first when flip_sin_to_cos."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = t.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]  # [N, half]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def run_layer_stack(
    layers: nnx.Module, x: jax.Array, layer_fn, *, num_layers: int, scan: bool, remat: str
) -> jax.Array:
    """Runs `layer_fn(layer, x) -> x` over a stack of layers built with `nnx.vmap` (every parameter
    has a leading [num_layers] axis): with `nnx.scan`, or unrolled for debugging (each layer's
    parameters sliced out of the stacked state), under the named remat policy `remat`."""
    from stepvideo_jax.config import remat_policy

    enabled, policy = remat_policy(remat)
    if enabled:
        layer_fn = nnx.remat(layer_fn, policy=policy, prevent_cse=not scan)
    if scan:
        return nnx.scan(layer_fn, in_axes=(0, nnx.Carry), out_axes=nnx.Carry)(layers, x)
    graphdef, state = nnx.split(layers)
    for i in range(num_layers):
        x = layer_fn(nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)), x)
    return x
