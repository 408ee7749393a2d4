"""Orbax checkpoints of converted components, their manifest, and `restore_component`.

A converted checkpoint folder (written by `convert_torch_weights.py`) holds:

    manifest.json                 what was converted: per component its config, dtype, sources
    transformer/params/           one Orbax checkpoint per component (flat {"a.b.kernel": array})
    vae/params/
    step_llm/params/  step_llm/tokenizer/step1_chat_tokenizer.model
    hunyuan_clip/params/  hunyuan_clip/tokenizer/{vocab.txt, ...}

`restore_component(ckpt_dir, name, mesh=..., rules=...)` is the one way the sampler and trainer load
weights: it rebuilds the frozen config from the manifest, builds the model abstractly
(`nnx.eval_shape`), computes each parameter's target sharding from the mesh and the logical rules, and
has Orbax read straight into those shardings (each host reads only its own shards; nothing is first
materialised replicated or on the host).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from stepvideo_jax.config import dtype_from_name

__all__ = [
    "CONVERTER_VERSION",
    "MANIFEST_NAME",
    "ComponentModel",
    "COMPONENT_MODELS",
    "component_model",
    "component_config",
    "config_from_manifest",
    "read_manifest",
    "write_manifest",
    "save_params",
    "stored_params",
    "abstract_component",
    "restore_component",
    "tokenizer_dir",
    "save_components",
    "new_manifest",
    "staged_folder",
]

CONVERTER_VERSION = "1"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "stepvideo-jax/orbax-components"


@dataclasses.dataclass(frozen=True)
class ComponentModel:
    """How to rebuild one component's model from its manifest entry. Names are "module:attribute"
    so that a component whose network is not installed fails only when it is used."""

    config_class: str  # frozen config dataclass with `from_release(dict, **overrides)`
    model_class: str  # nnx.Module taking (cfg, *, rngs)
    sharding_rules: str  # default logical-axis rules for this network
    dtype_field: str = "param_dtype"  # config field holding the parameters' dtype name
    # Fields that choose how the network runs, not what its weights are: a caller may change them.
    runtime_fields: tuple[str, ...] = ("dtype", "scan_layers", "remat_policy", "attention_kernel")


COMPONENT_MODELS: dict[str, ComponentModel] = {
    "transformer": ComponentModel(
        "stepvideo_jax.dit:DiTConfig", "stepvideo_jax.dit:StepVideoDiT", "stepvideo_jax.sharding:DIT_RULES"
    ),
    "vae": ComponentModel(
        "stepvideo_jax.vae:VAEConfig",
        "stepvideo_jax.vae:VideoVAE",
        "stepvideo_jax.sharding:VAE_RULES",
        runtime_fields=("dtype", "attention_block", "conv_impl"),
    ),
    "step_llm": ComponentModel(
        "stepvideo_jax.text:StepLLMConfig", "stepvideo_jax.text:StepLLM", "stepvideo_jax.sharding:TEXT_RULES"
    ),
    "hunyuan_clip": ComponentModel(
        "stepvideo_jax.text:ClipConfig", "stepvideo_jax.text:HunyuanCLIP", "stepvideo_jax.sharding:TEXT_RULES"
    ),
}


def _resolve(ref: str, what: str):
    module, attr = ref.split(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} needs {ref}, which is not available ({e})") from e
    return obj


def component_model(name: str) -> ComponentModel:
    if name not in COMPONENT_MODELS:
        raise ValueError(f"unknown component {name!r}; expected one of {', '.join(COMPONENT_MODELS)}")
    return COMPONENT_MODELS[name]


def config_from_manifest(name: str, config: Mapping[str, Any], dtype: str):
    """The frozen config of component `name` from its manifest `config` dict and parameter dtype."""
    spec = component_model(name)
    cls = _resolve(spec.config_class, f"component {name!r}")
    return cls.from_release(dict(config), **{spec.dtype_field: dtype})


# ------------------------------------------------------------------------------------ manifest
def read_manifest(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    file = os.path.join(os.fspath(ckpt_dir), MANIFEST_NAME)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: not found (expected a folder written by convert_torch_weights.py)")
    with open(file) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: not valid JSON ({e})") from e
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("components"), dict):
        raise ValueError(f"{file}: not a stepvideo-jax manifest (expected format {MANIFEST_FORMAT!r} and 'components')")
    return manifest


def write_manifest(ckpt_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    file = os.path.join(os.fspath(ckpt_dir), MANIFEST_NAME)
    tmp = file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, file)


def _entry(manifest: Mapping[str, Any], ckpt_dir: str, name: str) -> Mapping[str, Any]:
    component_model(name)  # an unknown name fails as such, not as "absent from this checkpoint"
    components = manifest["components"]
    if name not in components:
        raise ValueError(f"{ckpt_dir}: no component {name!r} in the manifest (has {', '.join(sorted(components))})")
    return components[name]


def component_config(ckpt_dir: str | os.PathLike, name: str):
    """The frozen config a component was converted with (its runtime fields may be replaced)."""
    ckpt_dir = os.fspath(ckpt_dir)
    entry = _entry(read_manifest(ckpt_dir), ckpt_dir, name)
    return config_from_manifest(name, entry["config"], entry["dtype"])


def tokenizer_dir(ckpt_dir: str | os.PathLike, name: str) -> str:
    """The folder holding the tokenizer files copied for component `name`."""
    ckpt_dir = os.fspath(ckpt_dir)
    entry = _entry(read_manifest(ckpt_dir), ckpt_dir, name)
    if not entry.get("tokenizer"):
        raise ValueError(f"{ckpt_dir}: component {name!r} has no tokenizer")
    return os.path.join(ckpt_dir, entry["tokenizer"])


# ------------------------------------------------------------------------------------ arrays
def _checkpointer():
    """An Orbax PyTree checkpointer that writes host arrays without copying them first (Orbax's
    default deep-copies every numpy array before its async write: a second copy of the component)
    and without compression (random-looking weights shrink ~20% but writing and every restore then
    pay zstd on the host)."""
    import orbax.checkpoint as ocp

    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
        (jax.Array, ocp.type_handlers.ArrayHandler()),
    )
    handler = ocp.PyTreeCheckpointHandler(use_compression=False, type_handler_registry=registry)
    return ocp.Checkpointer(handler)


def save_params(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes {"a.b.kernel": array} as one Orbax checkpoint at `path` (which must not exist yet)."""
    import orbax.checkpoint as ocp

    with _checkpointer() as ckptr:
        ckptr.save(os.path.abspath(os.fspath(path)), args=ocp.args.PyTreeSave(dict(arrays)))


def stored_params(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{"a.b.kernel": (shape, dtype)} of an Orbax parameter checkpoint, read from its metadata only."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: Orbax checkpoint folder not found")
    with _checkpointer() as ckptr:
        meta = ckptr.metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in tree.items()}


# ------------------------------------------------------------------------------------ restore
def _check_requested(name: str, ckpt_dir: str, stored_cfg, requested) -> None:
    """Fails naming both values when the caller's config differs from the converted one in a field
    that determines the weights (anything but the component's runtime fields)."""
    spec = component_model(name)
    if type(requested) is not type(stored_cfg):
        raise ValueError(
            f"{ckpt_dir}: component {name!r} holds a {type(stored_cfg).__name__}, but a "
            f"{type(requested).__name__} was requested"
        )
    diffs = [
        f"{f.name}: checkpoint {getattr(stored_cfg, f.name)!r}, requested {getattr(requested, f.name)!r}"
        for f in dataclasses.fields(stored_cfg)
        if f.name not in spec.runtime_fields and getattr(stored_cfg, f.name) != getattr(requested, f.name)
    ]
    if diffs:
        raise ValueError(f"{ckpt_dir}: component {name!r} was converted with a different config: " + "; ".join(diffs))


def abstract_component(ckpt_dir: str | os.PathLike, name: str, *, config=None):
    """(abstract model, config) of a converted component: shapes and dtypes only, no memory used."""
    ckpt_dir = os.fspath(ckpt_dir)
    entry = _entry(read_manifest(ckpt_dir), ckpt_dir, name)
    stored_cfg = config_from_manifest(name, entry["config"], entry["dtype"])
    cfg = stored_cfg
    if config is not None:
        _check_requested(name, ckpt_dir, stored_cfg, config)
        cfg = config
    model_cls = _resolve(component_model(name).model_class, f"component {name!r}")
    return nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(0))), cfg


def _quantized_param_keys(model: nnx.Module) -> set[str]:
    from stepvideo_jax.quantize import quantized_param_keys

    return quantized_param_keys(model)


def _param_shardings(params: nnx.State, mesh, rules) -> dict[str, Any]:
    """{"a.b.kernel": sharding} for every parameter: one device without a mesh, else the logical rules."""
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return {".".join(map(str, p)): device for p, _ in nnx.to_flat_state(params)}
    from stepvideo_jax.sharding import model_shardings

    tree = model_shardings(params, mesh, rules)
    return {".".join(map(str, p)): _value(v) for p, v in nnx.to_flat_state(tree)}


def _value(var):
    return var.get_value() if hasattr(var, "get_value") else var


def _flat_values(params: nnx.State) -> dict[str, Any]:
    """{"a.b.kernel": array} of a parameter state (the key layout of the stored checkpoints)."""
    return {".".join(map(str, p)): _value(v) for p, v in nnx.to_flat_state(params)}


def restore_component(
    ckpt_dir: str | os.PathLike,
    name: str,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules=None,
    config=None,
    dtype: str | None = None,
) -> nnx.Module:
    """Restores component `name` ("transformer", "vae", "step_llm", "hunyuan_clip") of a converted
    checkpoint folder straight into its target shardings.

    mesh/rules: with a mesh, every parameter is placed by the logical-axis `rules` (default: the
      component's own table in `stepvideo_jax.sharding`); without one, on the first device.
    config: optional frozen config the caller expects; it may differ from the converted one only in
      runtime fields (compute dtype, remat, attention kernel, ...), which it then sets.
    dtype: optional parameter dtype name the caller expects.
    A mismatch with the manifest, or a stored array that disagrees with it, raises naming both.
    """
    import orbax.checkpoint as ocp

    ckpt_dir = os.fspath(ckpt_dir)
    entry = _entry(read_manifest(ckpt_dir), ckpt_dir, name)
    if dtype is not None and dtype != entry["dtype"]:
        raise ValueError(f"{ckpt_dir}: component {name!r} was converted to {entry['dtype']}, but {dtype} was requested")
    stored_quantize = entry["config"].get("quantize", "none")
    if config is not None and getattr(config, "quantize", stored_quantize) != stored_quantize:
        # A float checkpoint restored as a weight-only quantized model (see stepvideo_jax.quantize).
        from stepvideo_jax.quantize import restore_quantized

        return restore_quantized(ckpt_dir, name, config, mesh=mesh, rules=rules)
    abstract, _ = abstract_component(ckpt_dir, name, config=config)
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    others = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(rest)]
    if others:
        raise ValueError(f"component {name!r}: model has non-parameter state {others[:5]}, which checkpoints do not hold")

    path = os.path.abspath(os.path.join(ckpt_dir, entry["checkpoint"]))
    stored = stored_params(path)
    want_dtype = np.dtype(dtype_from_name(entry["dtype"]))
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(params)}
    quantized = _quantized_param_keys(abstract)
    for key, var in flat.items():
        value = _value(var)
        if key not in stored:
            raise ValueError(f"{path}: parameter {key} is missing (the model for the manifest's config has it)")
        shape, sdtype = stored[key]
        if shape != tuple(value.shape):
            raise ValueError(f"{path}: parameter {key} is stored with shape {shape}, the manifest's config gives {tuple(value.shape)}")
        if key in quantized:  # int8 / e4m3 kernels and float32 scales of a quantized component
            if sdtype != np.dtype(value.dtype):
                raise ValueError(f"{path}: quantized parameter {key} is stored as {sdtype}, expected {np.dtype(value.dtype)}")
        elif sdtype != want_dtype or np.dtype(value.dtype) != want_dtype:
            raise ValueError(
                f"{path}: parameter {key} is stored as {sdtype}, the manifest says {entry['dtype']} "
                f"(model dtype {np.dtype(value.dtype)})"
            )
    extra = sorted(set(stored) - set(flat))
    if extra:
        raise ValueError(f"{path}: stored parameters the model does not have: {extra[:10]}")

    if mesh is not None and rules is None:
        rules = _resolve(component_model(name).sharding_rules, f"sharding component {name!r}")
    shardings = _param_shardings(params, mesh, rules)
    target = {k: jax.ShapeDtypeStruct(_value(v).shape, _value(v).dtype, sharding=shardings[k]) for k, v in flat.items()}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    with _checkpointer() as ckptr:
        restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args))
    for key, var in flat.items():
        var.set_value(restored[key])
    return nnx.merge(graphdef, params, rest)


# ------------------------------------------------------------------------------------ export
def new_manifest(source: str) -> dict[str, Any]:
    """An empty manifest (components are added under "components")."""
    import datetime

    return {
        "format": MANIFEST_FORMAT,
        "converter_version": CONVERTER_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "components": {},
    }


@contextlib.contextmanager
def staged_folder(dst: str | os.PathLike, *, overwrite: bool):
    """Yields a temporary folder beside `dst`; when the block finishes it replaces `dst` (only with
    `overwrite` if `dst` exists); when the block raises it is removed and `dst` is left untouched."""
    import shutil
    import tempfile

    dst = os.path.abspath(os.fspath(dst))
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst}: destination exists; pass overwrite to replace it")
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.tmp-", dir=parent)
    try:
        yield tmp
        if os.path.exists(dst):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-", dir=parent)
            os.replace(dst, os.path.join(old, "replaced"))
            os.replace(tmp, dst)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # leave no partial destination, then re-raise
        raise


def save_components(
    dst: str | os.PathLike,
    components: Mapping[str, tuple[nnx.Module, str | None]],
    *,
    source: str,
    overwrite: bool = False,
    param_dtype: str | None = None,
) -> dict[str, Any]:
    """Writes JAX models as a checkpoint folder that `restore_component` and the sampler read (the
    layout `convert_torch_weights.py` writes): {name: (model, tokenizer folder or None)}, where name
    is one of "transformer", "vae", "step_llm", "hunyuan_clip" and the model's `cfg` has `to_release()`.
    `param_dtype` (a dtype name) casts every parameter on the way out (e.g. "bfloat16" halves a
    float32 model); by default each model's own parameter dtype is kept.
    The folder is written beside `dst` under a temporary name and renamed; returns the manifest."""
    import shutil

    manifest = new_manifest(source)
    with staged_folder(dst, overwrite=overwrite) as tmp:
        for name, (model, tokenizer) in components.items():
            spec = component_model(name)
            arrays = {k: np.asarray(v) for k, v in _flat_values(nnx.state(model, nnx.Param)).items()}
            quantized = _quantized_param_keys(model)  # int8 / e4m3 kernels and their scales keep their dtypes
            if param_dtype is not None:
                cast = np.dtype(dtype_from_name(param_dtype))
                arrays = {k: a if k in quantized else a.astype(cast) for k, a in arrays.items()}
            dtypes = {str(a.dtype) for k, a in arrays.items() if k not in quantized}
            if len(dtypes) != 1:
                raise ValueError(f"component {name!r} mixes parameter dtypes {sorted(dtypes)}; cast it to one first")
            os.makedirs(os.path.join(tmp, name))
            save_params(os.path.join(tmp, name, "params"), arrays)
            entry: dict[str, Any] = {
                "config": model.cfg.to_release(),
                "dtype": param_dtype or getattr(model.cfg, spec.dtype_field),
                "checkpoint": f"{name}/params",
                "num_params": sum(int(a.size) for a in arrays.values()),
                "bytes": sum(int(a.nbytes) for a in arrays.values()),
                "sources": [],
                "tokenizer": None,
            }
            if tokenizer:
                shutil.copytree(tokenizer, os.path.join(tmp, name, "tokenizer"))
                entry["tokenizer"] = f"{name}/tokenizer"
            manifest["components"][name] = entry
        write_manifest(tmp, manifest)
    return manifest
