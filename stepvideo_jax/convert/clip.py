"""Key table: released HunyuanCLIP (`hunyuan_clip/clip_text_encoder/`, a HF `BertModel`) -> `HunyuanCLIP`.

The release ships `pytorch_model.bin`; reading it needs torch (an optional dependency, imported
only here and only for `.bin` files, with `torch.load(..., weights_only=True)`). A safetensors copy
loads without torch. Keys are accepted with or without a `bert.` prefix; the `position_ids` /
`token_type_ids` buffers some checkpoints carry are ignored (they are not parameters).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from flax import nnx

from stepvideo_jax.convert.core import (
    ConversionError,
    Rule,
    TensorSource,
    build_model,
    convert,
    flat_param_paths,
    identity,
    linear,
    linear_to,
)
from stepvideo_jax.text.clip import ClipConfig, HunyuanCLIP

__all__ = ["CLIP_KEYS", "convert_hunyuan_clip", "load_hunyuan_clip", "read_torch_bin", "TORCH_INSTALL_HINT"]

TORCH_INSTALL_HINT = "pip install 'stepvideo-jax[torch]'"

_E = r"encoder\.layer\.(?P<layer>\d+)\."
_LN = r"LayerNorm\.(?:weight|gamma)"
_LNB = r"LayerNorm\.(?:bias|beta)"

CLIP_KEYS: list[Rule] = [
    Rule(r"embeddings\.word_embeddings\.weight", "word_embeddings.embedding", identity),
    Rule(r"embeddings\.position_embeddings\.weight", "position_embeddings.embedding", identity),
    Rule(r"embeddings\.token_type_embeddings\.weight", "token_type_embeddings.embedding", identity),
    Rule(r"embeddings\." + _LN, "embeddings_norm_scale"),
    Rule(r"embeddings\." + _LNB, "embeddings_norm_bias"),
    Rule(
        _E + r"attention\.self\.(?P<p>query|key|value)\.weight", "layers.attention.{p}.kernel", linear_to
    ),  # (D, H, hd)
    Rule(_E + r"attention\.self\.(?P<p>query|key|value)\.bias", "layers.attention.{p}.bias", lambda a, s: a.reshape(s)),
    Rule(_E + r"attention\.output\.dense\.weight", "layers.attention.output.kernel", linear_to),  # (H, hd, D)
    Rule(_E + r"attention\.output\.dense\.bias", "layers.attention.output.bias"),
    Rule(_E + r"attention\.output\." + _LN, "layers.attention_norm_scale"),
    Rule(_E + r"attention\.output\." + _LNB, "layers.attention_norm_bias"),
    Rule(_E + r"intermediate\.dense\.weight", "layers.intermediate.kernel", linear),
    Rule(_E + r"intermediate\.dense\.bias", "layers.intermediate.bias"),
    Rule(_E + r"output\.dense\.weight", "layers.output.kernel", linear),
    Rule(_E + r"output\.dense\.bias", "layers.output.bias"),
    Rule(_E + r"output\." + _LN, "layers.output_norm_scale"),
    Rule(_E + r"output\." + _LNB, "layers.output_norm_bias"),
    Rule(r"pooler\.dense\.weight", "pooler.kernel", linear),
    Rule(r"pooler\.dense\.bias", "pooler.bias"),
]

_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class _BertKeys(Mapping):
    """View of a BERT state dict without the optional `bert.` prefix and without non-parameter buffers."""

    def __init__(self, tensors: Mapping[str, np.ndarray] | TensorSource):
        self._tensors = tensors
        self._map: dict[str, str] = {}
        for key in tensors.keys():
            name = key[len("bert.") :] if key.startswith("bert.") else key
            if name in _BUFFERS:
                continue
            if name in self._map:
                raise ConversionError(f"key {key}: given both with and without the 'bert.' prefix")
            self._map[name] = key

    def __getitem__(self, name: str) -> np.ndarray:
        key = self._map[name]
        t = self._tensors
        return t.get(key) if isinstance(t, TensorSource) else np.asarray(t[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def keys(self):
        return list(self._map)

    def file_of(self, name: str) -> str | None:  # lets the core's errors name the file
        file_of = getattr(self._tensors, "file_of", None)
        return file_of(self._map[name]) if file_of is not None else None


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading a PyTorch .bin checkpoint needs torch, which is not installed; install it with "
            f"{TORCH_INSTALL_HINT} (or convert the file to safetensors)"
        ) from e
    return torch


def read_torch_bin(file: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (`pytorch_model.bin`) safely (weights_only=True) into numpy arrays."""
    file = os.fspath(file)
    if not os.path.isfile(file):
        raise ConversionError(f"{file}: file not found")
    torch = _import_torch()
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ConversionError(f"{file}: expected a state dict (name -> tensor); got {type(state).__name__}")
    out = {}
    for key, t in state.items():
        if t.dtype == torch.bfloat16:  # numpy has no bf16: go through the bit pattern
            import ml_dtypes

            out[key] = t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = t.numpy()
    return out


def _resolve(path: str) -> tuple[str | None, str]:
    """(config.json or None, weights file or folder) for a `hunyuan_clip/` folder, its
    `clip_text_encoder/` folder, or a weights file."""
    if os.path.isdir(path):
        sub = os.path.join(path, "clip_text_encoder")
        folder = sub if os.path.isdir(sub) else path
        config = os.path.join(folder, "config.json")
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(folder, name)):
                return (config if os.path.isfile(config) else None), os.path.join(folder, name)
        raise ConversionError(
            f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin found"
        )
    if not os.path.isfile(path):
        raise ConversionError(
            f"{path}: not found (expected a hunyuan_clip/ folder, its clip_text_encoder/, or a weights file)"
        )
    config = os.path.join(os.path.dirname(path), "config.json")
    return (config if os.path.isfile(config) else None), path


def _open_weights(file: str) -> Mapping[str, np.ndarray] | TensorSource:
    if file.endswith(".bin"):
        return read_torch_bin(file)
    return TensorSource(file)


def convert_hunyuan_clip(tensors, cfg: ClipConfig, *, dtype=None) -> dict:
    """Released BERT tensors -> {nnx path: array} for `HunyuanCLIP(cfg)`."""
    abstract = nnx.eval_shape(lambda: HunyuanCLIP(cfg, rngs=nnx.Rngs(0)))
    return convert(
        _BertKeys(tensors), CLIP_KEYS, flat_param_paths(abstract), stacked_prefixes=("layers.",), dtype=dtype
    )


def load_hunyuan_clip(
    weights: str | os.PathLike | Mapping,
    config: ClipConfig | Mapping[str, Any] | None = None,
    **overrides,
) -> HunyuanCLIP:
    """Loads the released HunyuanCLIP: `weights` is the `hunyuan_clip/` folder, its
    `clip_text_encoder/` folder (config.json + pytorch_model.bin or model.safetensors), a `.bin` /
    `.safetensors` file, or a {key: array} mapping; `config` a ClipConfig or a BERT config dict."""
    if isinstance(weights, Mapping):
        if config is None:
            raise ValueError("load_hunyuan_clip needs a config when weights are given as a mapping")
        tensors = weights
    else:
        config_file, file = _resolve(os.fspath(weights))
        if config is None:
            if config_file is None:
                raise FileNotFoundError(
                    f"no config.json beside {file}; pass config= (a ClipConfig or BERT config dict)"
                )
            with open(config_file) as f:
                config = json.load(f)
        tensors = _open_weights(file)
    if isinstance(config, ClipConfig):
        cfg = dataclasses.replace(config, **overrides)
    else:
        cfg = ClipConfig.from_release(config, **overrides)
    arrays = convert_hunyuan_clip(tensors, cfg)
    return build_model(lambda: HunyuanCLIP(cfg, rngs=nnx.Rngs(0)), arrays)
