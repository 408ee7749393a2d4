"""Reading a released checkpoint folder: its files -> config dicts and converted arrays.

The released layout (`stepfun-ai/stepvideo-ti2v`; the T2V sibling has the same one):

    transformer/config.json, diffusion_pytorch_model-*.safetensors (+ .index.json)
    vae/vae_v2.safetensors                       (the release has no VAE config file; its built-in
                                                  configuration is used unless vae/config.json exists)
    step_llm/config.json, model-*.safetensors (+ .index.json), step1_chat_tokenizer.model
    hunyuan_clip/clip_text_encoder/{config.json, pytorch_model.bin | model.safetensors}
    hunyuan_clip/tokenizer/{vocab.txt, ...}

`ReleaseFiles` says where one component lives (each component's entry in
`stepvideo_jax.components` holds one); `convert_arrays` runs its key table tensor by tensor: a tensor
is read lazily from its file, transformed, and cast to the target dtype before the next one is read,
so host memory peaks near one component's converted size. Writing checkpoints is the registry's job
(`stepvideo_jax.components.convert_release`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from stepvideo_jax.convert.clip import read_torch_bin
from stepvideo_jax.convert.core import ConversionError, TensorSource

__all__ = [
    "ReleaseFiles",
    "open_weights",
    "convert_arrays",
    "file_record",
    "source_files",
    "copy_tokenizer",
]


@dataclasses.dataclass(frozen=True)
class ReleaseFiles:
    """Where one component lives in the released folder (paths relative to its root)."""

    weights: str  # folder (sharded or single file) or file
    config_file: str  # config.json
    tokenizer: str | None = None  # file or folder copied to <dst>/<name>/tokenizer/
    # The release's built-in config dict, for a component whose release ships no config file (the
    # VAE's constructor arguments live in the official code); then `config_file` is read if present.
    builtin_config: Callable[[], dict] | None = None
    # Fields the config file must have: the ones that size the network (never silently defaulted).
    required: tuple[str, ...] = ()

    def read_config(self, src: str | os.PathLike, name: str) -> dict[str, Any]:
        """The component's release config dict (its config.json, or the release's built-in one)."""
        file = os.path.join(os.fspath(src), self.config_file)
        if not os.path.isfile(file):
            if self.builtin_config is not None:
                return dict(self.builtin_config())
            raise ConversionError(f"{file}: config not found (component {name!r})")
        with open(file) as f:
            try:
                cfg = json.load(f)
            except json.JSONDecodeError as e:
                raise ConversionError(f"{file}: not valid JSON ({e})") from e
        if not isinstance(cfg, dict):
            raise ConversionError(f"{file}: expected a JSON object")
        missing = [k for k in self.required if k not in cfg]
        if missing:
            raise ConversionError(f"{file}: required field(s) {', '.join(missing)} missing (component {name!r})")
        return cfg


# ------------------------------------------------------------------------------------ sources
def _read_torch_bin(path: str) -> Mapping[str, np.ndarray]:
    """A PyTorch `.bin` state dict (HunyuanCLIP's `pytorch_model.bin`), read with
    `torch.load(weights_only=True)`: no arbitrary unpickling."""
    try:
        return read_torch_bin(path)
    except ConversionError:
        raise
    except ImportError as e:  # torch is optional; say which file needed it
        raise ConversionError(f"{path}: {e}") from e
    except Exception as e:  # torch raises many types for truncated archives and refused pickles
        raise ConversionError(
            f"{path}: not a readable weights-only PyTorch state dict ({type(e).__name__}: {e})"
        ) from e


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


def convert_arrays(
    src: str | os.PathLike, files: ReleaseFiles, convert_fn: Callable, cfg, dtype: np.dtype
) -> tuple[dict[str, np.ndarray], Any]:
    """(arrays {nnx path: array in `dtype`}, tensor source) of one component of the released folder."""
    tensors = open_weights(os.path.join(os.fspath(src), files.weights))
    return convert_fn(tensors, cfg, dtype=dtype), tensors


# ------------------------------------------------------------------------------------ files
def file_record(path: str, root: str) -> dict[str, Any]:
    """{"file", "bytes", "sha256"} of one file (read in 16 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return {"file": os.path.relpath(path, root), "bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def source_files(src: str, release: ReleaseFiles, tensors) -> list[str]:
    """The files a component was converted from: its config (if any), index and weight files."""
    config_file = os.path.join(src, release.config_file)
    files = [config_file] if os.path.isfile(config_file) else []
    if isinstance(tensors, TensorSource):
        folder = tensors.path if os.path.isdir(tensors.path) else os.path.dirname(tensors.path)
        indexes = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".safetensors.index.json")]
        return files + sorted(indexes) + tensors.files()
    weights = os.path.join(src, release.weights)
    if os.path.isdir(weights):
        return files + sorted(os.path.join(weights, n) for n in os.listdir(weights) if n.endswith(".bin"))
    return files + [weights]


def copy_tokenizer(src_root: str, rel: str, dst_dir: str) -> list[str]:
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
