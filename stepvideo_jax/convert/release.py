"""Converting a released checkpoint folder into one Orbax checkpoint per component plus a manifest.

The released layout (`stepfun-ai/stepvideo-ti2v`; the T2V sibling has the same one):

    transformer/config.json, diffusion_pytorch_model-*.safetensors (+ .index.json)
    vae/vae_v2.safetensors                       (the release has no VAE config file; its built-in
                                                  configuration is used unless vae/config.json exists)
    step_llm/config.json, model-*.safetensors (+ .index.json), step1_chat_tokenizer.model
    hunyuan_clip/clip_text_encoder/{config.json, pytorch_model.bin | model.safetensors}
    hunyuan_clip/tokenizer/{vocab.txt, ...}

Each component goes through the same key table the parity tool uses, tensor by tensor: a tensor is
read lazily from its file, transformed, and cast to the target dtype before the next one is read, so
host memory peaks near one component's converted size. Output is written to a temporary folder beside
the destination and renamed into place only when everything succeeded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stepvideo_jax.checkpoint import config_from_manifest, new_manifest, save_params, staged_folder, write_manifest
from stepvideo_jax.config import dtype_from_name
from stepvideo_jax.convert.core import ConversionError, TensorSource
from stepvideo_jax.quantize import QUANTIZABLE_COMPONENTS, QUANTIZE_MODES, quantize_arrays

__all__ = [
    "COMPONENTS",
    "ReleaseComponent",
    "open_weights",
    "read_component_config",
    "convert_component",
    "convert_release",
]


@dataclasses.dataclass(frozen=True)
class ReleaseComponent:
    """Where one component lives in the released folder and which key table converts it."""

    name: str
    weights: str  # folder (sharded or single file) or file, relative to the release root
    config_file: str  # config.json relative to the release root
    convert_fn: str  # "module:function" (tensors, cfg, *, dtype) -> {nnx path: array}
    tokenizer: str | None = None  # file or folder copied to <dst>/<name>/tokenizer/
    # The release's built-in config dict, for a component whose release ships no config file (the
    # VAE's constructor arguments live in the official code); then `config_file` is read if present.
    builtin_config: Callable[[], dict] | None = None


COMPONENTS: dict[str, ReleaseComponent] = {
    "transformer": ReleaseComponent(
        "transformer", "transformer", "transformer/config.json", "stepvideo_jax.convert.dit:convert_dit"
    ),
    "vae": ReleaseComponent(
        "vae",
        "vae/vae_v2.safetensors",
        "vae/config.json",
        "stepvideo_jax.convert.vae:convert_vae",
        builtin_config=lambda: _vae_config_class().real().to_release(),
    ),
    "step_llm": ReleaseComponent(
        "step_llm",
        "step_llm",
        "step_llm/config.json",
        "stepvideo_jax.convert.step_llm:convert_step_llm",
        tokenizer="step_llm/step1_chat_tokenizer.model",
    ),
    "hunyuan_clip": ReleaseComponent(
        "hunyuan_clip",
        "hunyuan_clip/clip_text_encoder",
        "hunyuan_clip/clip_text_encoder/config.json",
        "stepvideo_jax.convert.clip:convert_hunyuan_clip",
        tokenizer="hunyuan_clip/tokenizer",
    ),
}


def _vae_config_class():
    return _resolve("stepvideo_jax.vae:VAEConfig", "component 'vae'")


def _resolve(ref: str, what: str):
    module, attr = ref.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConversionError(f"{what} needs {ref}, which is not available ({e})") from e


# ------------------------------------------------------------------------------------ sources
def _read_torch_bin(path: str) -> Mapping[str, np.ndarray]:
    """A PyTorch `.bin` state dict (HunyuanCLIP's `pytorch_model.bin`), read with
    `torch.load(weights_only=True)`: no arbitrary unpickling."""
    read = _resolve("stepvideo_jax.convert.clip:read_torch_bin", f"reading {path}")
    try:
        return read(path)
    except ConversionError:
        raise
    except ImportError as e:  # torch is optional; say which file needed it
        raise ConversionError(f"{path}: {e}") from e
    except Exception as e:  # torch raises many types for truncated archives and refused pickles
        raise ConversionError(f"{path}: not a readable weights-only PyTorch state dict ({type(e).__name__}: {e})") from e


def open_weights(path: str | os.PathLike) -> TensorSource | Mapping[str, np.ndarray]:
    """The tensors of a weights file or folder: lazy for safetensors (single or sharded with an
    index), a weights-only torch load for `.bin`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        names = os.listdir(path)
        if any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
            return TensorSource(path)
        bins = sorted(n for n in names if n.endswith(".bin"))
        if len(bins) == 1:
            return _read_torch_bin(os.path.join(path, bins[0]))
        raise ConversionError(
            f"{path}: expected *.safetensors (with an index when sharded) or one pytorch_model.bin; found "
            f"{sorted(names) or 'nothing'}"
        )
    if not os.path.exists(path):
        raise ConversionError(f"{path}: not found")
    return _read_torch_bin(path) if path.endswith(".bin") else TensorSource(path)


def read_component_config(src: str | os.PathLike, name: str) -> dict[str, Any]:
    """The component's release config dict (its config.json, or the release's built-in one)."""
    comp = COMPONENTS[name]
    file = os.path.join(os.fspath(src), comp.config_file)
    if not os.path.isfile(file):
        if comp.builtin_config is not None:
            return dict(comp.builtin_config())
        raise ConversionError(f"{file}: config not found (component {name!r})")
    with open(file) as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ConversionError(f"{file}: expected a JSON object")
    return cfg


def convert_component(src: str | os.PathLike, name: str, dtype: str) -> tuple[dict[str, np.ndarray], dict, TensorSource]:
    """(arrays {nnx path: array in `dtype`}, release config dict, tensor source) of one component."""
    comp = COMPONENTS[name]
    config = read_component_config(src, name)
    cfg = config_from_manifest(name, config, dtype)
    tensors = open_weights(os.path.join(os.fspath(src), comp.weights))
    convert_fn = _resolve(comp.convert_fn, f"component {name!r}")
    arrays = convert_fn(tensors, cfg, dtype=np.dtype(dtype_from_name(dtype)))
    return arrays, config, tensors


# ------------------------------------------------------------------------------------ files
def _file_record(path: str, root: str) -> dict[str, Any]:
    """{"file", "bytes", "sha256"} of one file (read in 16 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return {"file": os.path.relpath(path, root), "bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def _source_files(src: str, name: str, tensors) -> list[str]:
    """The files a component was converted from: its config (if any), index and weight files."""
    comp = COMPONENTS[name]
    files = [os.path.join(src, comp.config_file)] if os.path.isfile(os.path.join(src, comp.config_file)) else []
    if isinstance(tensors, TensorSource):
        folder = tensors.path if os.path.isdir(tensors.path) else os.path.dirname(tensors.path)
        indexes = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".safetensors.index.json")]
        return files + sorted(indexes) + tensors.files()
    weights = os.path.join(src, comp.weights)
    if os.path.isdir(weights):
        return files + sorted(os.path.join(weights, n) for n in os.listdir(weights) if n.endswith(".bin"))
    return files + [weights]


def _copy_tokenizer(src_root: str, rel: str, dst_dir: str) -> list[str]:
    path = os.path.join(src_root, rel)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ConversionError(f"{path}: tokenizer not found")
    if not files:
        raise ConversionError(f"{path}: tokenizer folder is empty")
    os.makedirs(dst_dir)
    for f in files:
        shutil.copy2(f, os.path.join(dst_dir, os.path.basename(f)))
    return files


def _plan(src: str, components: Sequence[str]) -> None:
    """Fails before anything is written if a component's files are absent."""
    for name in components:
        comp = COMPONENTS[name]
        weights = os.path.join(src, comp.weights)
        if not os.path.exists(weights):
            raise ConversionError(f"{weights}: not found (component {name!r}; is {src} a released checkpoint folder?)")
        read_component_config(src, name)
        if comp.tokenizer and not os.path.exists(os.path.join(src, comp.tokenizer)):
            raise ConversionError(f"{os.path.join(src, comp.tokenizer)}: tokenizer not found (component {name!r})")


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

    `dst` is written under a temporary name beside it and renamed on success; an existing `dst` is
    replaced only with `overwrite`. Any failure removes the temporary folder and leaves `dst` untouched.
    """
    src = os.path.abspath(os.fspath(src))
    dst = os.path.abspath(os.fspath(dst))
    components = list(components or COMPONENTS)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown components {unknown}; expected some of {', '.join(COMPONENTS)}")
    dtype_from_name(dtype)
    if quantize != "none":
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"unknown quantize mode {quantize!r}; expected one of {', '.join(QUANTIZE_MODES)}")
        if not set(components) & set(QUANTIZABLE_COMPONENTS):
            raise ValueError(
                f"quantize={quantize} applies to {' and '.join(QUANTIZABLE_COMPONENTS)}, none of which is converted"
            )
    if not os.path.isdir(src):
        raise ConversionError(f"{src}: source folder not found")
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst}: destination exists; pass --overwrite to replace it")
    _plan(src, components)

    manifest = new_manifest(src)
    with staged_folder(dst, overwrite=overwrite) as tmp:
        for name in components:
            t0 = time.perf_counter()
            arrays, config, tensors = convert_component(src, name, dtype)
            if quantize != "none" and name in QUANTIZABLE_COMPONENTS:
                arrays = quantize_arrays(name, config, dtype, arrays, quantize)
                config = dict(config, quantize=quantize)
            n_params = sum(int(a.size) for a in arrays.values())
            n_bytes = sum(int(a.nbytes) for a in arrays.values())
            os.makedirs(os.path.join(tmp, name))
            t1 = time.perf_counter()
            save_params(os.path.join(tmp, name, "params"), arrays)
            del arrays
            t2 = time.perf_counter()
            entry: dict[str, Any] = {
                "config": config,
                "dtype": dtype,
                "checkpoint": f"{name}/params",
                "num_params": n_params,
                "bytes": n_bytes,
                "sources": [_file_record(f, src) for f in _source_files(src, name, tensors)],
                "tokenizer": None,
            }
            comp = COMPONENTS[name]
            if comp.tokenizer:
                copied = _copy_tokenizer(src, comp.tokenizer, os.path.join(tmp, name, "tokenizer"))
                entry["tokenizer"] = f"{name}/tokenizer"
                entry["tokenizer_files"] = [_file_record(f, src) for f in copied]
            manifest["components"][name] = entry
            t3 = time.perf_counter()
            log(
                f"{name}: {n_params:,} parameters, {n_bytes / 2**30:.2f} GiB {dtype}"
                f"{f' ({quantize} linears)' if 'quantize' in config else ''} in {t3 - t0:.1f}s "
                f"(convert {t1 - t0:.1f}s, write {t2 - t1:.1f}s, hash and copy {t3 - t2:.1f}s)"
            )
        write_manifest(tmp, manifest)
    return manifest
