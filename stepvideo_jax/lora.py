"""Low-rank adapters (LoRA) on the DiT's linear layers, inside its scanned layer stack.

    model = apply_lora(dit, LoRAConfig(rank=8, alpha=8.0), seed=0)   # base frozen, adapters B = 0
    nnx.state(model, LoRAParam)                                      # the trainable adapters only
    merged = merge_lora(model)                                       # base kernels + scale * A @ B

`apply_lora` wraps every `nnx.Linear` / `nnx.LinearGeneral` (and weight-only quantized
`layers.QuantizedDense`: QLoRA, an int8 / fp8 frozen base under float32 adapters) whose dotted module path matches one of
`LoRAConfig.targets` (regular expressions, e.g. `blocks\\.attn1\\.wqkv`) in a `LoRALinear`: the base
layer plus `lora_a` [*in, r] and `lora_b` [r, *out] (with the stacked-layers axis in front inside the
`nnx.vmap`-built block stack, so `nnx.scan` slices them per layer like the base weights), output
`base(x) + (alpha / rank) * scale * (x . A) . B`. Adapter parameters are `LoRAParam`s (an
`nnx.Param` subclass, so a filter selects them) with logical axis names taken from their base kernel
plus `lora_rank`, so the DiT's sharding table places them like the weights they adapt.

Why not qwix's `LoraProvider`: `qwix.apply_lora_to_model` creates the adapters by tracing a call of
the model, and on our `nnx.scan` / `nnx.vmap` layer stack that trace fails (scan length inference
sees unstacked placeholders: `IndexError: tuple index out of range`; the unrolled path fails the
same way slicing them), so it cannot add per-layer adapters to a stacked model.

Adapter files (`save_adapter` / `load_adapter`): safetensors with one pair per adapted layer, keyed
by the *released* DiT names as diffusers / ComfyUI LoRA files are:
`transformer_blocks.{i}.attn1.wqkv.lora_A.weight` [r, in] and `....lora_B.weight` [out, r] (PyTorch
Linear layout, `in`/`out` flattened in the release's order), plus metadata `rank`, `alpha` and the
base checkpoint's fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepvideo_jax.files import atomic_path
from stepvideo_jax.layers.quantized import QuantizedDense

__all__ = [
    "LoRAConfig",
    "LoRAParam",
    "LoRALinear",
    "DEFAULT_TARGETS",
    "apply_lora",
    "merge_lora",
    "lora_param_count",
    "adapter_arrays",
    "set_adapter_arrays",
    "save_adapter",
    "load_adapter",
    "apply_adapters",
    "fingerprint_checkpoint",
    "release_layout",
    "RELEASE_NAMES",
]

# Self- and cross-attention projections and the FFN of every block.
DEFAULT_TARGETS = (
    r"blocks\.attn1\.(wqkv|wo)",
    r"blocks\.attn2\.(wq|wkv|wo)",
    r"blocks\.ff\.(w_in|w_out)",
)
# Also available: r"patch_embed", r"adaln" (the patch embedding and the shared AdaLN projection).


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 8.0  # the update is scaled by alpha / rank
    targets: tuple[str, ...] = DEFAULT_TARGETS  # regular expressions over dotted module paths (full match)
    dropout: float = 0.0  # dropout on the adapter's input while training (0: none)

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1; got {self.rank!r}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be a finite number > 0; got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1); got {self.dropout!r}")
        if not self.targets:
            raise ValueError("LoRA targets must name at least one module pattern")
        for t in self.targets:
            re.compile(t)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRAParam(nnx.Param):
    """An adapter parameter (trainable while the base `nnx.Param`s stay frozen)."""


class LoRALinear(nnx.Module):
    """`base(x) + scale * (x . A) . B` for a base `nnx.Linear` / `nnx.LinearGeneral` / `QuantizedDense`."""

    def __init__(
        self, base: nnx.Module, lora_a: LoRAParam, lora_b: LoRAParam, *, n_in: int, scale: float, dropout: float = 0.0
    ):
        self.base = base
        self.lora_a = lora_a  # [(L,) *in, r]
        self.lora_b = lora_b  # [(L,) r, *out]
        self.n_in = n_in  # number of input axes the base layer contracts (the last n_in of x)
        self.scale = scale
        self.dropout = dropout
        self.deterministic = True  # set False (with `dropout_rng`) to train with dropout

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.base(x)
        a, b = self.lora_a[...], self.lora_b[...]
        h = x.astype(a.dtype)
        if self.dropout > 0 and not self.deterministic:
            raise NotImplementedError("LoRA dropout during training is not wired through the scanned stack yet")
        n = self.n_in
        z = jnp.tensordot(h, a, axes=(tuple(range(h.ndim - n, h.ndim)), tuple(range(n))))  # [..., r]
        delta = jnp.tensordot(z, b, axes=1)  # [..., *out]
        return y + (self.scale * delta).astype(y.dtype)


def _is_linear(module) -> bool:
    return isinstance(module, (nnx.Linear, nnx.LinearGeneral, QuantizedDense))


def _in_out(module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(module, nnx.Linear):
        return (module.in_features,), (module.out_features,)
    if isinstance(module, QuantizedDense):  # the adapter contracts the trailing axes of x, as the base must
        n = len(module.in_features)
        if tuple(module.axis) != tuple(range(-n, 0)):
            raise ValueError(
                f"LoRA on a QuantizedDense needs it to contract the last {n} axes; it contracts {module.axis}"
            )
    return tuple(module.in_features), tuple(module.out_features)


def _targets(model: nnx.Module, cfg: LoRAConfig) -> list[tuple[tuple, nnx.Module]]:
    patterns = [re.compile(t) for t in cfg.targets]
    found = []
    for path, module in nnx.iter_modules(model):
        name = ".".join(map(str, path))
        if _is_linear(module) and any(p.fullmatch(name) for p in patterns):
            found.append((path, module))
    return found


def apply_lora(model: nnx.Module, cfg: LoRAConfig, *, seed: int = 0, require_targets: bool = True) -> nnx.Module:
    """Wraps the matching linears of `model` in `LoRALinear` (in place; returns `model`). A is drawn
    N(0, 1/in) per layer with NumPy from `seed`, B is zero, so the adapted model starts equal to the base."""
    found = _targets(model, cfg)
    if not found and require_targets:
        names = [".".join(map(str, p)) for p, m in nnx.iter_modules(model) if _is_linear(m)]
        raise ValueError(f"LoRA targets {list(cfg.targets)} match no linear layer; the model has {names}")
    rng = np.random.default_rng(seed)
    for path, module in found:
        kernel = module.kernel
        shape = tuple(kernel.shape)
        names = tuple(kernel.get_metadata().get("out_sharding") or (None,) * len(shape))
        ins, outs = _in_out(module)
        lead = shape[: len(shape) - len(ins) - len(outs)]  # () or (num_layers,)
        lead_names = names[: len(lead)]
        in_names = names[len(lead) : len(lead) + len(ins)]
        out_names = names[len(lead) + len(ins) :]
        dtype = jnp.float32  # adapters train in float32 whatever the (frozen) base's dtype
        a = rng.normal(0.0, 1.0 / math.sqrt(math.prod(ins)), lead + ins + (cfg.rank,))
        lora_a = LoRAParam(
            jnp.asarray(a, dtype), out_sharding=lead_names + in_names + ("lora_rank",), eager_sharding=False
        )
        lora_b = LoRAParam(
            jnp.zeros(lead + (cfg.rank,) + outs, dtype),
            out_sharding=lead_names + ("lora_rank",) + out_names,
            eager_sharding=False,
        )
        wrapped = LoRALinear(module, lora_a, lora_b, n_in=len(ins), scale=cfg.scale, dropout=cfg.dropout)
        parent = model
        for part in path[:-1]:
            parent = getattr(parent, part) if not isinstance(part, int) else parent[part]
        setattr(parent, path[-1], wrapped)
    return model


def _wrapped(model: nnx.Module) -> list[tuple[tuple, LoRALinear]]:
    return [(p, m) for p, m in nnx.iter_modules(model) if isinstance(m, LoRALinear)]


def merge_lora(model: nnx.Module, *, scale: float = 1.0) -> nnx.Module:
    """Folds every adapter into its base kernel (`kernel += scale * lora_scale * A . B`, computed in
    float32) and puts the base layers back; returns `model` (changed in place). A quantized base is
    refused: folding into int8 / e4m3 would round the update away (merge on the float base instead)."""
    quantized = [".".join(map(str, p)) for p, w in _wrapped(model) if isinstance(w.base, QuantizedDense)]
    if quantized:
        raise ValueError(f"cannot merge adapters into quantized layers {quantized[:3]}; merge on the float base model")
    for path, wrapped in _wrapped(model):
        base = wrapped.base
        kernel = base.kernel[...]
        a = jnp.asarray(wrapped.lora_a[...], jnp.float32)
        b = jnp.asarray(wrapped.lora_b[...], jnp.float32)
        n_lead = a.ndim - 1 - wrapped.n_in  # 1 inside the stacked blocks, else 0
        eq_in = "abcdefgh"[: wrapped.n_in]
        eq_out = "pqrstuvw"[: b.ndim - 1 - n_lead]
        l_ = "L" if n_lead else ""
        delta = jnp.einsum(f"{l_}{eq_in}z,{l_}z{eq_out}->{l_}{eq_in}{eq_out}", a, b)  # kernel's shape
        base.kernel[...] = (kernel.astype(jnp.float32) + scale * wrapped.scale * delta).astype(kernel.dtype)
        parent = model
        for part in path[:-1]:
            parent = getattr(parent, part) if not isinstance(part, int) else parent[part]
        setattr(parent, path[-1], base)
    return model


def lora_param_count(model: nnx.Module) -> tuple[int, int]:
    """(adapter parameters, base parameters) of an adapted model."""
    adapters = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, LoRAParam)))
    total = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    return adapters, total - adapters


def adapter_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """{"blocks.attn1.wqkv.lora_a": array, ...} of an adapted model (host copies)."""
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, LoRAParam))}


def set_adapter_arrays(model: nnx.Module, arrays: Mapping[str, Any]) -> None:
    """Sets an adapted model's adapters from `adapter_arrays`-style keys; every key must match in name
    and shape (a one-line error names the first that does not)."""
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, LoRAParam))}
    missing = sorted(set(flat) - set(arrays))
    extra = sorted(set(arrays) - set(flat))
    if missing or extra:
        raise ValueError(f"adapter keys do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, var in flat.items():
        value = np.asarray(arrays[key])
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"adapter {key} has shape {tuple(value.shape)}; the model expects {tuple(var.shape)}")
        var[...] = jnp.asarray(value, var[...].dtype)


def config_to_json(cfg: LoRAConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def config_from_json(text: str) -> LoRAConfig:
    fields = json.loads(text)
    fields["targets"] = tuple(fields.get("targets", DEFAULT_TARGETS))
    return LoRAConfig(**fields)


# ------------------------------------------------------------------------------------ adapter files
ADAPTER_FORMAT = "stepvideo-jax/lora-v1"


def save_adapter(path: str, arrays: Mapping[str, np.ndarray], cfg: LoRAConfig, *, base_fingerprint: str) -> None:
    """Writes adapters (`adapter_arrays` keys, stacked per layer) as safetensors with the LoRA config
    and the base checkpoint's fingerprint in the metadata; atomically (temp name, then rename)."""
    from safetensors.numpy import save_file

    metadata = {"format": ADAPTER_FORMAT, "lora_config": config_to_json(cfg), "base_fingerprint": base_fingerprint}
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_adapter(path: str) -> tuple[LoRAConfig, dict[str, np.ndarray], str]:
    """(LoRA config, adapter arrays, base fingerprint) of a file written by `save_adapter`."""
    import os

    from safetensors import safe_open

    if not os.path.isfile(path):
        raise ValueError(f"LoRA adapter {path!r} not found (expected a .safetensors file written by train.py)")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise ValueError(f"{path}: not a readable safetensors adapter ({e})") from e
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path}: not a stepvideo-jax LoRA adapter (metadata format {meta.get('format')!r})")
    return config_from_json(meta["lora_config"]), arrays, meta.get("base_fingerprint", "")


def apply_adapters(model: nnx.Module, adapters: list[tuple[str, float]]) -> nnx.Module:
    """Merges each (adapter file, scale) into `model`'s weights, one after another (so several
    adapters combine additively); returns the merged model."""
    for path, scale in adapters:
        cfg, arrays, _ = load_adapter(path)
        apply_lora(model, cfg)
        set_adapter_arrays(model, arrays)
        merge_lora(model, scale=scale)
    return model


def fingerprint_checkpoint(ckpt_dir: str) -> str:
    """sha256 of a checkpoint folder's manifest.json: names the base weights an adapter was trained on."""
    import hashlib
    import os

    with open(os.path.join(ckpt_dir, "manifest.json"), "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


# Our block module paths -> the released DiT's (diffusers-style names; see convert/dit.py DIT_KEYS).
RELEASE_NAMES = {
    "attn1.wqkv": "attn1.wqkv",
    "attn1.wo": "attn1.wo",
    "attn2.wq": "attn2.wq",
    "attn2.wkv": "attn2.wkv",
    "attn2.wo": "attn2.wo",
    "ff.w_in": "ff.net.0.proj",
    "ff.w_out": "ff.net.2",
}


def release_layout(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Adapters in the layout diffusers / ComfyUI LoRA files use, on the released DiT's key names:
    `transformer_blocks.{i}.{name}.lora_A.weight` [r, in] and `...lora_B.weight` [out, r] (PyTorch
    Linear layout; multi-axis inputs/outputs flattened row-major, the release's order). Only block
    linears are exported (a patch-embedding or AdaLN adapter raises)."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        module, kind = key.rsplit(".", 1)
        if not module.startswith("blocks."):
            raise ValueError(f"adapter {key} is not on a block linear; the release layout holds block adapters only")
        name = RELEASE_NAMES.get(module[len("blocks.") :])
        if name is None:
            raise ValueError(f"adapter {key}: no released name for module {module!r}")
        for i in range(value.shape[0]):
            a = np.asarray(value[i])
            if kind == "lora_a":  # [*in, r] -> [r, in]
                out[f"transformer_blocks.{i}.{name}.lora_A.weight"] = a.reshape(-1, a.shape[-1]).T.copy()
            else:  # [r, *out] -> [out, r]
                out[f"transformer_blocks.{i}.{name}.lora_B.weight"] = a.reshape(a.shape[0], -1).T.copy()
    return out
