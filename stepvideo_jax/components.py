"""The component registry: what each of Step-Video's four networks *is*, in one place, as objects.

    COMPONENTS["transformer" | "vae" | "step_llm" | "hunyuan_clip"] -> Component

A `Component` holds the network's frozen config class, its model class, its sharding rules, where it
lives in the released checkpoint folder and the converter key table that maps it. Everything that
loads, saves or converts a component goes through this module:

* `restore_component(ckpt_dir, name, mesh=...)`: a converted checkpoint folder -> model, with every
  parameter read by Orbax straight into its shardings on the mesh (the component's own rules);
* `save_components(dst, {name: (model, tokenizer folder)})`: trained JAX models -> the same layout;
* `convert_release(src, dst)`: the released PyTorch folder -> the same layout (`convert_torch_weights.py`);
* `prompt_encoder_from_checkpoint(ckpt_dir)`: both text encoders and tokenizers -> `PromptEncoder`;
* `load_components(config)`: (dit, vae, prompt encoder) for a sampling config (released, demo or tiny).

A checkpoint folder holds `manifest.json` (per component: its config, dtype, sources) and one Orbax
checkpoint per component (`checkpoint.py` does the generic I/O); `manifest_entry` builds an entry.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from stepvideo_jax import checkpoint
from stepvideo_jax.config import dtype_from_name
from stepvideo_jax.convert import clip as clip_keys
from stepvideo_jax.convert import dit as dit_keys
from stepvideo_jax.convert import step_llm as step_llm_keys
from stepvideo_jax.convert import vae as vae_keys
from stepvideo_jax.convert.core import ConversionError
from stepvideo_jax.convert.release import ReleaseFiles, convert_arrays, copy_tokenizer, file_record, source_files
from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.layers.quantized import check_quantize_mode, quantize_kernel
from stepvideo_jax.lora import apply_adapters
from stepvideo_jax.quantize import (
    QUANTIZABLE_COMPONENTS,
    quantize_arrays,
    quantize_layerwise,
    quantized_kernels,
    quantized_param_keys,
)
from stepvideo_jax.sharding import ShardingRules, model_shardings
from stepvideo_jax.testing import tiny_pipeline_components
from stepvideo_jax.text import (
    ClipConfig,
    ClipTokenizer,
    HunyuanCLIP,
    PromptEncoder,
    StepLLM,
    StepLLMConfig,
    StepTokenizer,
)
from stepvideo_jax.vae import VAEConfig, VideoVAE

__all__ = [
    "Component",
    "COMPONENTS",
    "component",
    "config_from_manifest",
    "component_config",
    "tokenizer_dir",
    "abstract_component",
    "restore_component",
    "manifest_entry",
    "save_components",
    "convert_release",
    "prompt_encoder_from_checkpoint",
    "load_components",
    "component_loaders",
    "check_memory_options",
    "RESIDENCY_MODES",
    "CONVERTER_HINT",
    "check_checkpoint_dir",
]

CONVERTER_HINT = "python convert_torch_weights.py --src=/path/to/stepvideo-ti2v --dst={dst}"


@dataclasses.dataclass(frozen=True)
class Component:
    """One network of the release: how to build it, shard it, find it and convert it."""

    name: str
    config_class: type  # frozen config dataclass with `from_release(dict, **overrides)` and `to_release()`
    model_class: type  # nnx.Module taking (cfg, *, rngs)
    sharding: ShardingRules
    release: ReleaseFiles
    key_table: Sequence  # the converter's Rule table (documentation and tooling; `convert` applies it)
    convert: Callable  # (tensors, cfg, *, dtype) -> {nnx path: array}
    dtype_field: str = "param_dtype"  # config field holding the parameters' dtype name
    # Fields that choose how the network runs, not what its weights are: a caller may change them.
    runtime_fields: tuple[str, ...] = ("dtype", "scan_layers", "remat_policy", "attention_kernel")

    def config_from_release(self, config: Mapping[str, Any], dtype: str):
        """The frozen config from a release / manifest `config` dict and a parameter dtype name."""
        return self.config_class.from_release(dict(config), **{self.dtype_field: dtype})

    def abstract_model(self, cfg) -> nnx.Module:
        """The model for `cfg` with shapes and dtypes only (no memory used)."""
        return nnx.eval_shape(lambda: self.model_class(cfg, rngs=nnx.Rngs(0)))


# The config.json fields that size each network: a release config without one is refused, not defaulted.
_DIT_REQUIRED = ("num_attention_heads", "attention_head_dim", "in_channels", "num_layers")
_STEP_LLM_REQUIRED = ("hidden_size", "num_attention_heads", "num_attention_groups", "ffn_hidden_size", "num_layers")
_CLIP_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "transformer",
            DiTConfig,
            StepVideoDiT,
            StepVideoDiT.SHARDING,
            ReleaseFiles("transformer", "transformer/config.json", required=_DIT_REQUIRED),
            dit_keys.DIT_KEYS,
            dit_keys.convert_dit,
        ),
        Component(
            "vae",
            VAEConfig,
            VideoVAE,
            VideoVAE.SHARDING,
            # The release has no VAE config file: its constructor arguments live in the official code.
            ReleaseFiles(
                "vae/vae_v2.safetensors", "vae/config.json", builtin_config=lambda: VAEConfig.real().to_release()
            ),
            vae_keys.VAE_KEYS,
            vae_keys.convert_vae,
            runtime_fields=("dtype", "attention_block", "conv_impl"),
        ),
        Component(
            "step_llm",
            StepLLMConfig,
            StepLLM,
            StepLLM.SHARDING,
            ReleaseFiles(
                "step_llm",
                "step_llm/config.json",
                tokenizer="step_llm/step1_chat_tokenizer.model",
                required=_STEP_LLM_REQUIRED,
            ),
            step_llm_keys.STEP_LLM_KEYS,
            step_llm_keys.convert_step_llm,
        ),
        Component(
            "hunyuan_clip",
            ClipConfig,
            HunyuanCLIP,
            HunyuanCLIP.SHARDING,
            ReleaseFiles(
                "hunyuan_clip/clip_text_encoder",
                "hunyuan_clip/clip_text_encoder/config.json",
                tokenizer="hunyuan_clip/tokenizer",
                required=_CLIP_REQUIRED,
            ),
            clip_keys.CLIP_KEYS,
            clip_keys.convert_hunyuan_clip,
        ),
    )
}


def component(name: str) -> Component:
    if name not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}; expected one of {', '.join(COMPONENTS)}")
    return COMPONENTS[name]


def config_from_manifest(name: str, config: Mapping[str, Any], dtype: str):
    """The frozen config of component `name` from its manifest `config` dict and parameter dtype."""
    return component(name).config_from_release(config, dtype)


def _damaged(ckpt_dir: str, name: str, problem: str) -> ValueError:
    return ValueError(
        f"{ckpt_dir}: component {name!r}: {problem}; the checkpoint folder is damaged: convert it again ("
        + CONVERTER_HINT.format(dst=ckpt_dir)
        + " --overwrite)"
    )


def _entry(ckpt_dir: str, name: str) -> Mapping[str, Any]:
    """The manifest entry of `name`, checked field by field (one line naming the folder, the component
    and the problem, and the fix)."""
    component(name)  # an unknown name fails as such, not as "absent from this checkpoint"
    entry = checkpoint.manifest_component(checkpoint.read_manifest(ckpt_dir), ckpt_dir, name)
    if not isinstance(entry, Mapping):
        raise _damaged(ckpt_dir, name, f"manifest entry is {entry!r}, not an object")
    for field, kind in (("config", Mapping), ("dtype", str), ("checkpoint", str)):
        if not isinstance(entry.get(field), kind):
            raise _damaged(ckpt_dir, name, f"manifest entry has no valid {field!r} (got {entry.get(field)!r})")
    for field in ("num_params", "bytes"):
        value = entry.get(field, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _damaged(ckpt_dir, name, f"manifest field {field!r} must be an integer >= 0; got {value!r}")
    params = os.path.join(ckpt_dir, entry["checkpoint"])
    if not os.path.isdir(params):
        raise _damaged(ckpt_dir, name, f"parameter folder {params} is missing")
    return entry


def component_config(ckpt_dir: str | os.PathLike, name: str):
    """The frozen config a component was converted with (its runtime fields may be replaced)."""
    ckpt_dir = os.fspath(ckpt_dir)
    entry = _entry(ckpt_dir, name)
    return config_from_manifest(name, entry["config"], entry["dtype"])


def tokenizer_dir(ckpt_dir: str | os.PathLike, name: str) -> str:
    """The folder holding the tokenizer files copied for component `name`."""
    ckpt_dir = os.fspath(ckpt_dir)
    entry = _entry(ckpt_dir, name)
    if not entry.get("tokenizer"):
        raise ValueError(f"{ckpt_dir}: component {name!r} has no tokenizer")
    return os.path.join(ckpt_dir, entry["tokenizer"])


# ------------------------------------------------------------------------------------ restore
def _check_requested(comp: Component, ckpt_dir: str, stored_cfg, requested) -> None:
    """Fails naming both values when the caller's config differs from the converted one in a field
    that determines the weights (anything but the component's runtime fields)."""
    if type(requested) is not type(stored_cfg):
        raise ValueError(
            f"{ckpt_dir}: component {comp.name!r} holds a {type(stored_cfg).__name__}, but a "
            f"{type(requested).__name__} was requested"
        )
    diffs = [
        f"{f.name}: checkpoint {getattr(stored_cfg, f.name)!r}, requested {getattr(requested, f.name)!r}"
        for f in dataclasses.fields(stored_cfg)
        if f.name not in comp.runtime_fields and getattr(stored_cfg, f.name) != getattr(requested, f.name)
    ]
    if diffs:
        raise ValueError(
            f"{ckpt_dir}: component {comp.name!r} was converted with a different config: " + "; ".join(diffs)
        )


def abstract_component(ckpt_dir: str | os.PathLike, name: str, *, config=None):
    """(abstract model, config) of a converted component: shapes and dtypes only, no memory used."""
    ckpt_dir = os.fspath(ckpt_dir)
    comp = component(name)
    entry = _entry(ckpt_dir, name)
    stored_cfg = comp.config_from_release(entry["config"], entry["dtype"])
    cfg = stored_cfg
    if config is not None:
        _check_requested(comp, ckpt_dir, stored_cfg, config)
        cfg = config
    return comp.abstract_model(cfg), cfg


def _param_shardings(params: nnx.State, mesh, rules: ShardingRules) -> dict[str, Any]:
    """{"a.b.kernel": sharding} for every parameter: one device without a mesh, else the logical rules."""
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return {".".join(map(str, p)): device for p, _ in nnx.to_flat_state(params)}
    tree = model_shardings(params, mesh, rules)
    return {".".join(map(str, p)): checkpoint.variable_value(v) for p, v in nnx.to_flat_state(tree)}


def restore_component(
    ckpt_dir: str | os.PathLike,
    name: str,
    *,
    mesh: jax.sharding.Mesh | None = None,
    config=None,
    dtype: str | None = None,
) -> nnx.Module:
    """Restores component `name` ("transformer", "vae", "step_llm", "hunyuan_clip") of a converted
    checkpoint folder straight into its target shardings.

    mesh: with a mesh, every parameter is placed by the component's own sharding rules; without one,
      on the first device.
    config: optional frozen config the caller expects; it may differ from the converted one only in
      runtime fields (compute dtype, remat, attention kernel, ...), which it then sets.
    dtype: optional parameter dtype name the caller expects.
    A mismatch with the manifest, or a stored array that disagrees with it, raises naming both.
    """
    ckpt_dir = os.fspath(ckpt_dir)
    comp = component(name)
    entry = _entry(ckpt_dir, name)
    if dtype is not None and dtype != entry["dtype"]:
        raise ValueError(f"{ckpt_dir}: component {name!r} was converted to {entry['dtype']}, but {dtype} was requested")
    stored_quantize = entry["config"].get("quantize", "none")
    if config is not None and getattr(config, "quantize", stored_quantize) != stored_quantize:
        # A float checkpoint restored as a weight-only quantized model.
        return _restore_quantized(ckpt_dir, comp, entry, config, mesh)
    abstract, _ = abstract_component(ckpt_dir, name, config=config)
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    others = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(rest)]
    if others:
        raise ValueError(
            f"component {name!r}: model has non-parameter state {others[:5]}, which checkpoints do not hold"
        )
    path = os.path.abspath(os.path.join(ckpt_dir, entry["checkpoint"]))
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(params)}
    shardings = _param_shardings(params, mesh, comp.sharding)
    target = {
        k: jax.ShapeDtypeStruct(
            checkpoint.variable_value(v).shape, checkpoint.variable_value(v).dtype, sharding=shardings[k]
        )
        for k, v in flat.items()
    }
    try:
        restored = checkpoint.restore_params(
            path, target, dtype_name=entry["dtype"], own_dtype=quantized_param_keys(abstract)
        )
    except ValueError as e:
        raise _damaged(ckpt_dir, name, str(e)) from None
    for key, var in flat.items():
        var.set_value(restored[key])
    return nnx.merge(graphdef, params, rest)


def _restore_quantized(ckpt_dir: str, comp: Component, entry: Mapping[str, Any], config, mesh) -> nnx.Module:
    """A float checkpoint's component restored as the quantized model of `config` (`quantize` "int8"
    or "fp8"), straight into its shardings: the unquantized parameters in one Orbax read, then each
    float kernel read in its own shardings and quantized on the devices (per layer) into its int8
    kernel's and scale's shardings, so at most one float kernel is resident beside the model."""
    name = comp.name
    mode = check_quantize_mode(config.quantize)
    stored_cfg = comp.config_from_release(entry["config"], entry["dtype"])
    if stored_cfg.quantize != "none":
        raise ValueError(
            f"{ckpt_dir}: component {name!r} is already quantized ({stored_cfg.quantize}); "
            f"restore it with quantize={stored_cfg.quantize!r}"
        )
    float_abstract, _ = abstract_component(ckpt_dir, name, config=dataclasses.replace(config, quantize="none"))
    abstract = comp.abstract_model(config)
    graphdef, qparams, rest = nnx.split(abstract, nnx.Param, ...)
    if nnx.to_flat_state(rest):
        raise ValueError(f"component {name!r}: model has non-parameter state, which checkpoints do not hold")
    kernels = quantized_kernels(abstract)
    scales = {k.scale for k in kernels.values()}
    qshard = _param_shardings(qparams, mesh, comp.sharding)
    fparams = nnx.state(float_abstract, nnx.Param)
    fshard = _param_shardings(fparams, mesh, comp.sharding)
    fflat = checkpoint.flat_values(fparams)
    path = os.path.abspath(os.path.join(ckpt_dir, entry["checkpoint"]))
    stored = checkpoint.stored_params(path)
    want = np.dtype(dtype_from_name(entry["dtype"]))
    for key, value in fflat.items():
        if stored.get(key) != (tuple(value.shape), want):
            raise _damaged(
                ckpt_dir,
                name,
                f"{path}: parameter {key} is stored as {stored.get(key)}, expected {(tuple(value.shape), want)}",
            )

    def read(keys):
        target = {k: jax.ShapeDtypeStruct(fflat[k].shape, fflat[k].dtype, sharding=fshard[k]) for k in keys}
        return checkpoint.read_params(path, target, partial=True)

    qflat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(qparams)}
    for key, value in read([k for k in qflat if k not in kernels and k not in scales]).items():
        qflat[key].set_value(value)
    for key, k in kernels.items():
        fn = jax.jit(
            lambda w, k=k: quantize_layerwise(lambda x: quantize_kernel(x, k.num_in_axes, mode), w, k.leading),
            out_shardings=(qshard[key], qshard[k.scale]),
        )
        q, s = fn(read([key])[key])
        qflat[key].set_value(q)
        qflat[k.scale].set_value(s)
    return nnx.merge(graphdef, qparams, rest)


# ------------------------------------------------------------------------------------ writing
def manifest_entry(
    name: str,
    config: Mapping[str, Any],
    dtype: str,
    arrays: Mapping[str, np.ndarray],
    *,
    sources: list[dict] | None = None,
    tokenizer: bool = False,
    tokenizer_files: list[dict] | None = None,
) -> dict[str, Any]:
    """The manifest entry of one component written as `<name>/params` (+ `<name>/tokenizer`)."""
    component(name)
    entry: dict[str, Any] = {
        "config": dict(config),
        "dtype": dtype,
        "checkpoint": f"{name}/params",
        "num_params": sum(int(a.size) for a in arrays.values()),
        "bytes": sum(int(a.nbytes) for a in arrays.values()),
        "sources": list(sources or []),
        "tokenizer": f"{name}/tokenizer" if tokenizer else None,
    }
    if tokenizer_files is not None:
        entry["tokenizer_files"] = tokenizer_files
    return entry


def save_components(
    dst: str | os.PathLike,
    components: Mapping[str, tuple[nnx.Module, str | None]],
    *,
    source: str,
    overwrite: bool = False,
    param_dtype: str | None = None,
) -> dict[str, Any]:
    """Writes JAX models as a checkpoint folder that `restore_component` and the sampler read (the
    layout `convert_torch_weights.py` writes): {name: (model, tokenizer folder or None)}, where the
    model's `cfg` has `to_release()`. `param_dtype` (a dtype name) casts every parameter on the way
    out (e.g. "bfloat16" halves a float32 model); by default each model's own parameter dtype is kept.
    The folder is written beside `dst` under a temporary name and renamed; returns the manifest."""
    manifest = checkpoint.new_manifest(source)
    with checkpoint.staged_folder(dst, overwrite=overwrite) as tmp:
        for name, (model, tokenizer) in components.items():
            comp = component(name)
            arrays = {k: np.asarray(v) for k, v in checkpoint.flat_values(nnx.state(model, nnx.Param)).items()}
            quantized = quantized_param_keys(model)  # int8 / e4m3 kernels and their scales keep their dtypes
            if param_dtype is not None:
                cast = np.dtype(dtype_from_name(param_dtype))
                arrays = {k: a if k in quantized else a.astype(cast) for k, a in arrays.items()}
            dtypes = {str(a.dtype) for k, a in arrays.items() if k not in quantized}
            if len(dtypes) != 1:
                raise ValueError(f"component {name!r} mixes parameter dtypes {sorted(dtypes)}; cast it to one first")
            os.makedirs(os.path.join(tmp, name))
            checkpoint.save_params(os.path.join(tmp, name, "params"), arrays)
            if tokenizer:
                shutil.copytree(tokenizer, os.path.join(tmp, name, "tokenizer"))
            dtype = param_dtype or getattr(model.cfg, comp.dtype_field)
            manifest["components"][name] = manifest_entry(
                name, model.cfg.to_release(), dtype, arrays, tokenizer=bool(tokenizer)
            )
        checkpoint.write_manifest(tmp, manifest)
    return manifest


def _check_release_config(src: str, name: str, config: Mapping[str, Any]) -> None:
    """Fails naming the config file and the field when a value cannot be read (`"two"` for an int)."""
    comp = component(name)
    try:
        comp.config_from_release(config, "float32")
        return
    except (ValueError, TypeError) as e:
        error = e
    file = os.path.join(src, comp.release.config_file)
    for field, value in config.items():  # the field that fails on its own, others at their defaults
        try:
            comp.config_from_release({field: value}, "float32")
        except (ValueError, TypeError) as e:
            raise ConversionError(f"{file}: field {field!r} has a bad value {value!r} ({e})") from None
    raise ConversionError(f"{file}: the config is not valid for component {name!r} ({error})") from None


def _check_release(src: str, names: Sequence[str]) -> None:
    """Fails before anything is written if a component's files are absent."""
    for name in names:
        files = component(name).release
        weights = os.path.join(src, files.weights)
        if not os.path.exists(weights):
            raise ConversionError(f"{weights}: not found (component {name!r}; is {src} a released checkpoint folder?)")
        _check_release_config(src, name, files.read_config(src, name))
        if files.tokenizer and not os.path.exists(os.path.join(src, files.tokenizer)):
            raise ConversionError(f"{os.path.join(src, files.tokenizer)}: tokenizer not found (component {name!r})")


def convert_release(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    components: Sequence[str] | None = None,
    dtype: str = "bfloat16",
    overwrite: bool = False,
    log: Callable[[str], None] = lambda s: None,
    quantize: str = "none",
) -> dict[str, Any]:
    """Converts the released folder `src` into `dst` (Orbax checkpoints + manifest); returns the manifest.

    `quantize` ("int8" / "fp8") stores the transformer's and Step-LLM's large linears weight-only
    quantized (per-output-channel scales, `stepvideo_jax.quantize`); the manifest's config records it.
    The VAE and CLIP stay in `dtype`.

    Each component goes through its key table tensor by tensor (host memory peaks near one
    component's converted size). `dst` is written under a temporary name beside it and renamed on
    success; an existing `dst` is replaced only with `overwrite`. Any failure removes the temporary
    folder and leaves `dst` untouched.
    """
    src = os.path.abspath(os.fspath(src))
    dst = os.path.abspath(os.fspath(dst))
    names = list(components or COMPONENTS)
    unknown = [c for c in names if c not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown components {unknown}; expected some of {', '.join(COMPONENTS)}")
    dtype_from_name(dtype)
    check_quantize_mode(quantize)
    if quantize != "none" and not set(names) & set(QUANTIZABLE_COMPONENTS):
        raise ValueError(
            f"quantize={quantize} applies to {' and '.join(QUANTIZABLE_COMPONENTS)}, none of which is converted"
        )
    if not os.path.isdir(src):
        raise ConversionError(f"{src}: source folder not found")
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst}: destination exists; pass --overwrite to replace it")
    _check_release(src, names)

    manifest = checkpoint.new_manifest(src)
    with checkpoint.staged_folder(dst, overwrite=overwrite, log=log) as tmp:
        for name in names:
            comp = component(name)
            t0 = time.perf_counter()
            config = comp.release.read_config(src, name)
            cfg = comp.config_from_release(config, dtype)
            arrays, tensors = convert_arrays(src, comp.release, comp.convert, cfg, np.dtype(dtype_from_name(dtype)))
            if quantize != "none" and name in QUANTIZABLE_COMPONENTS:
                qcfg = comp.config_from_release(dict(config, quantize=quantize), dtype)
                arrays = quantize_arrays(comp.abstract_model(qcfg), arrays, quantize, name=name)
                config = dict(config, quantize=quantize)
            os.makedirs(os.path.join(tmp, name))
            t1 = time.perf_counter()
            checkpoint.save_params(os.path.join(tmp, name, "params"), arrays)
            t2 = time.perf_counter()
            copied = None
            if comp.release.tokenizer:
                copied = copy_tokenizer(src, comp.release.tokenizer, os.path.join(tmp, name, "tokenizer"))
            entry = manifest_entry(
                name,
                config,
                dtype,
                arrays,
                sources=[file_record(f, src) for f in source_files(src, comp.release, tensors)],
                tokenizer=bool(copied),
                tokenizer_files=None if copied is None else [file_record(f, src) for f in copied],
            )
            del arrays
            manifest["components"][name] = entry
            t3 = time.perf_counter()
            log(
                f"{name}: {entry['num_params']:,} parameters, {entry['bytes'] / 2**30:.2f} GiB {dtype}"
                f"{f' ({quantize} linears)' if 'quantize' in config else ''} in "
                f"{t3 - t0:.1f}s (convert {t1 - t0:.1f}s, write {t2 - t1:.1f}s, hash and copy {t3 - t2:.1f}s)"
            )
        checkpoint.write_manifest(tmp, manifest)
    return manifest


# ------------------------------------------------------------------------------------ pipelines
def prompt_encoder_from_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh | None = None,
    dtype: str | None = None,
    param_dtype: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    step_llm_quantize: str | None = None,
) -> PromptEncoder:
    """Both text encoders and their tokenizers from a checkpoint folder, parameters restored straight
    into their shardings on `mesh`; `dtype` is the compute dtype, `param_dtype` the expected stored one."""
    ckpt_dir = os.fspath(ckpt_dir)

    def restore(name: str, **fields):
        cfg = component_config(ckpt_dir, name)
        if dtype is not None:
            fields["dtype"] = dtype
        return restore_component(
            ckpt_dir, name, mesh=mesh, config=dataclasses.replace(cfg, **fields), dtype=param_dtype
        )

    quantize = {"quantize": step_llm_quantize} if step_llm_quantize else {}
    step_llm, clip = restore("step_llm", **quantize), restore("hunyuan_clip")
    step_tok = StepTokenizer(tokenizer_dir(ckpt_dir, "step_llm"), max_length=step_llm.cfg.max_length)
    clip_tok = ClipTokenizer(tokenizer_dir(ckpt_dir, "hunyuan_clip"), max_length=clip.cfg.max_length)
    return PromptEncoder(step_llm, step_tok, clip, clip_tok, cache_dir=cache_dir)


def check_checkpoint_dir(path: str) -> None:
    """A one-line error (with the converter command) when `path` is not a folder."""
    if not path or not os.path.isdir(path):
        raise ValueError(
            f"checkpoint folder {path!r} does not exist; convert the released weights first: "
            + CONVERTER_HINT.format(dst=path or "checkpoints/stepvideo-ti2v")
        )


RESIDENCY_MODES = ("all", "sequential")
_QUANTIZE_CHOICES = ("", "none", "int8", "fp8")


def check_memory_options(config) -> None:
    """One-line errors for a sampling config's residency and quantization fields (absent: defaults)."""
    residency = config.get("residency", "all")
    if residency not in RESIDENCY_MODES:
        raise ValueError(f"residency must be one of {', '.join(RESIDENCY_MODES)}; got {residency!r}")
    for name in ("dit_quantize", "text_quantize"):
        value = config.get(name, "")
        if value not in _QUANTIZE_CHOICES:
            raise ValueError(f"{name} must be one of '', 'none', 'int8', 'fp8' ('' = as converted); got {value!r}")
    if config.variant == "tiny" and (config.get("dit_quantize", "") or config.get("text_quantize", "")):
        raise ValueError("dit_quantize / text_quantize apply to converted checkpoints; the tiny variant has none")


def _quantize_override(config, field: str) -> dict[str, str]:
    """{"quantize": mode} for a component restore when the sampling config asks for one, else {}."""
    value = config.get(field, "")
    return {"quantize": value} if value else {}


def component_loaders(config, mesh: jax.sharding.Mesh | None = None) -> dict[str, Callable[[], Any]]:
    """{"text": () -> PromptEncoder, "vae": () -> VideoVAE, "dit": () -> StepVideoDiT} for a sampling
    config: each call loads that component alone (restored into its shardings on `mesh`, with the
    config's quantization and LoRA adapters), so a pipeline can hold one component at a time. The
    tiny variant builds its random models and keeps the one asked for."""
    check_memory_options(config)
    adapters = lora_adapters(config)
    if config.variant == "tiny":

        def tiny(i):
            def load():
                dit, vae, encoder = tiny_pipeline_components(config)
                if i == 0:
                    if adapters:
                        apply_adapters(dit, adapters)
                    if mesh is not None:
                        graphdef, state = nnx.split(dit)
                        dit = nnx.merge(graphdef, jax.device_put(state, model_shardings(state, mesh, dit.SHARDING)))
                return (dit, vae, encoder)[i]

            return load

        return {"dit": tiny(0), "vae": tiny(1), "text": tiny(2)}

    ckpt = config.checkpoint_dir
    check_checkpoint_dir(ckpt)
    param_dtype = config.param_dtype or None

    def restore(name: str, **runtime):
        cfg = dataclasses.replace(component_config(ckpt, name), **runtime)
        return restore_component(ckpt, name, mesh=mesh, config=cfg, dtype=param_dtype)

    def dit():
        model = restore(
            "transformer",
            dtype=config.dit_dtype,
            attention_kernel=config.attention_kernel,
            **_quantize_override(config, "dit_quantize"),
        )
        if bool(model.cfg.use_additional_conditions) != bool(config.use_additional_conditions):
            raise ValueError(
                f"{ckpt}: the converted transformer has use_additional_conditions={model.cfg.use_additional_conditions}"
                f", but this config (pipeline {config.pipeline!r}) needs {bool(config.use_additional_conditions)}"
            )
        if adapters:
            apply_adapters(model, adapters)
        return model

    def text():
        return prompt_encoder_from_checkpoint(
            ckpt,
            mesh=mesh,
            dtype=config.text_dtype,
            param_dtype=param_dtype,
            step_llm_quantize=config.get("text_quantize", "") or None,
        )

    return {"text": text, "vae": lambda: restore("vae", dtype=config.vae_dtype), "dit": dit}


def lora_adapters(config) -> list[tuple[str, float]]:
    """[(adapter file, scale)] from a sampling config's `lora` / `lora_scale` fields (checked, one line)."""
    paths = [p.strip() for p in str(config.get("lora", "") or "").split(",") if p.strip()]
    if not paths:
        return []
    try:
        scales = [float(s) for s in str(config.get("lora_scale", "1.0")).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"lora_scale must be numbers separated by commas; got {config.lora_scale!r}") from None
    if len(scales) == 1:
        scales = scales * len(paths)
    if len(scales) != len(paths):
        raise ValueError(f"lora_scale has {len(scales)} values for {len(paths)} adapters; give one, or one each")
    for p in paths:
        if not os.path.isfile(p):
            raise ValueError(f"LoRA adapter {p!r} not found (expected a .safetensors file written by train.py)")
    return list(zip(paths, scales))


def load_components(config, mesh: jax.sharding.Mesh | None = None):
    """(dit, vae, prompt_encoder) for a sampling config, all resident: random-weight tiny models for
    the `tiny` variant, else the checkpoint folder `config.checkpoint_dir` (converted release, demo, or
    trained and exported here). With a mesh, each is placed by its own rules (`component_loaders`)."""
    if config.variant == "tiny":  # one draw of the random models for all three
        check_memory_options(config)
        dit, vae, encoder = tiny_pipeline_components(config)
        adapters = lora_adapters(config)
        if adapters:
            apply_adapters(dit, adapters)
        if mesh is not None:
            graphdef, state = nnx.split(dit)
            dit = nnx.merge(graphdef, jax.device_put(state, model_shardings(state, mesh, dit.SHARDING)))
        return dit, vae, encoder
    loaders = component_loaders(config, mesh)
    return loaders["dit"](), loaders["vae"](), loaders["text"]()
