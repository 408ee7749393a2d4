"""Weight-only quantization of whole components: the DiT's and Step-LLM's large linears to int8 or
float8 (e4m3) with per-output-channel scales (the layer is `stepvideo_jax.layers.QuantizedDense`).

Three ways in, one layout out (a quantized model's parameter state, as `nnx.eval_shape` of the
model with `cfg.quantize` set describes it):

* `quantize_model(model, mode)`: a float model in memory -> its quantized copy.
* `quantize_arrays(abstract, arrays, mode, name=...)`: the converter's host arrays of one component
  -> the quantized checkpoint's arrays (`convert_torch_weights.py --quantize=int8`), one layer of a
  stacked kernel at a time so the float32 temporaries stay one layer's size.
* `stepvideo_jax.components.restore_component(..., config=<cfg with quantize>)` on a float checkpoint
  restores straight into the quantized model's shardings (with `quantize_layerwise` here): the
  unquantized parameters in one Orbax read, then each float kernel read in its own shardings and
  quantized on the devices (per layer) into the shardings of its int8 kernel and scale, so at most one
  float kernel is resident beside the quantized model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx

from stepvideo_jax.layers.quantized import QUANTIZE_MODES, QuantizedDense, check_quantize_mode, quantize_kernel

__all__ = [
    "QUANTIZABLE_COMPONENTS",
    "QuantizedKernel",
    "quantized_kernels",
    "quantized_param_keys",
    "quantize_model",
    "quantize_arrays",
    "quantize_layerwise",
    "QUANTIZE_MODES",
]

# Components whose config has a `quantize` field (the VAE and CLIP are small and stay float).
QUANTIZABLE_COMPONENTS = ("transformer", "step_llm")


@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
    """Where one quantized dense layer's parameters live in a flat state ("a.b.kernel" keys)."""

    kernel: str  # flat key of the kernel (int8 / e4m3 in the quantized model, float in the float one)
    scale: str  # flat key of its per-output-channel scale
    num_in_axes: int  # contracted (input) axes of the kernel
    leading: int  # stacked axes in front of them ([num_layers] in a scanned block stack)


def quantized_kernels(model: nnx.Module) -> dict[str, QuantizedKernel]:
    """{kernel key: QuantizedKernel} of every `QuantizedDense` in a (possibly abstract) model."""
    out = {}
    for path, module in nnx.iter_modules(model) if hasattr(nnx, "iter_modules") else model.iter_modules():
        if isinstance(module, QuantizedDense):
            prefix = ".".join(map(str, path))
            kernel = f"{prefix}.kernel"
            ndim = len(module.kernel.shape)
            leading = ndim - len(module.in_features) - len(module.out_features)
            out[kernel] = QuantizedKernel(kernel, f"{prefix}.scale", len(module.in_features), leading)
    return out


def quantized_param_keys(model: nnx.Module) -> set[str]:
    """Flat keys of the quantized kernels and their scales (parameters not in the parameter dtype)."""
    return {key for k in quantized_kernels(model).values() for key in (k.kernel, k.scale)}


def _flat(state: nnx.State) -> dict[str, Any]:
    return {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}


def _check_mode(cfg, mode: str) -> None:
    check_quantize_mode(mode)
    if mode == "none":
        raise ValueError("quantize mode 'none' quantizes nothing; expected 'int8' or 'fp8'")
    if not hasattr(cfg, "quantize"):
        raise ValueError(f"{type(cfg).__name__} has no `quantize` field; only the DiT and Step-LLM are quantized")
    if cfg.quantize != "none":
        raise ValueError(f"the model is already quantized ({cfg.quantize}); expected a float model")


def quantize_layerwise(fn, w: jax.Array, leading: int):
    """fn applied to each [*in, *out] slice of a kernel with `leading` stacked axes (lax.map, so the
    float32 temporaries are one layer's)."""
    if leading == 0:
        return fn(w)
    lead = w.shape[:leading]
    q, s = jax.lax.map(fn, w.reshape((-1,) + w.shape[leading:]))
    return q.reshape(lead + q.shape[1:]), s.reshape(lead + s.shape[1:])


def quantize_model(model: nnx.Module, mode: str) -> nnx.Module:
    """A quantized copy of a float DiT / Step-LLM (`model.cfg.quantize == "none"`); the float model is
    left as it is. Parameters keep their shardings' layout (the computation follows the inputs')."""
    cfg = model.cfg
    _check_mode(cfg, mode)
    qcfg = dataclasses.replace(cfg, quantize=mode)
    abstract = nnx.eval_shape(lambda: type(model)(qcfg, rngs=nnx.Rngs(0)))
    graphdef, qstate = nnx.split(abstract)
    kernels = quantized_kernels(abstract)
    scales = {k.scale: k for k in kernels.values()}
    float_values = {k: v.get_value() for k, v in _flat(nnx.state(model)).items()}
    quantize = jax.jit(
        lambda w, n, lead: quantize_layerwise(lambda x: quantize_kernel(x, n, mode), w, lead), static_argnums=(1, 2)
    )
    qflat = _flat(qstate)
    for key, var in qflat.items():
        if key in kernels:
            k = kernels[key]
            q, s = quantize(float_values[key], k.num_in_axes, k.leading)
            var.set_value(q)
            qflat[k.scale].set_value(s)
        elif key not in scales:
            if key not in float_values:
                raise ValueError(f"quantized model has parameter {key}, which the float model lacks")
            var.set_value(float_values[key])
    return nnx.merge(graphdef, qstate)


def quantize_arrays(
    abstract: nnx.Module, arrays: dict[str, np.ndarray], mode: str, *, name: str
) -> dict[str, np.ndarray]:
    """Quantizes a converted component's host arrays ({"a.b.kernel": array}, float, as the converter
    writes them) in place of its float kernels; returns the quantized checkpoint's arrays (the float
    kernels are dropped from `arrays` as they are replaced, so host memory does not double)."""
    check_quantize_mode(mode)
    kernels = quantized_kernels(abstract)  # `abstract`: the quantized model (nnx.eval_shape) of component `name`
    expected = {k: tuple(v.shape) for k, v in _flat(nnx.state(abstract)).items()}
    for key, k in kernels.items():
        if key not in arrays:
            raise ValueError(f"component {name!r}: converted arrays lack {key}")
        w = arrays.pop(key)
        if w.ndim != len(expected[key]) or tuple(w.shape) != expected[key]:
            raise ValueError(f"component {name!r}: {key} has shape {w.shape}; expected {expected[key]}")
        lead = w.shape[: k.leading]
        q = np.empty(w.shape, np.dtype(abstract_dtype(abstract, key)))
        s = np.empty(lead + w.shape[k.leading + k.num_in_axes :], np.float32)
        for idx in np.ndindex(*lead):  # one layer at a time: float32 temporaries of one slice
            q[idx], s[idx] = quantize_kernel(np.asarray(w[idx]), k.num_in_axes, mode)
        del w
        arrays[key], arrays[k.scale] = q, s
    return arrays


def abstract_dtype(abstract: nnx.Module, key: str):
    return _flat(nnx.state(abstract))[key].get_value().dtype
