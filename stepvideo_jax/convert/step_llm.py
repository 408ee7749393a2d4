"""Key table: released Step-LLM (`step_llm/`, 9 bf16 safetensors shards + index) -> `StepLLM`.

The release fuses q/k/v in `attention.wqkv` (rows: H*hd q, then per KV group [k | v]) and the
SwiGLU gate/up in `feed_forward.w1` (rows: [gate | up]). Our model keeps them apart so each can be
sharded on its own axis; `_SplitFused` presents the checkpoint with the fused tensors split into
virtual keys (`wq`, `wkv`, `w_gate`, `w_up`), read lazily one tensor at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
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
from stepvideo_jax.text.step_llm import StepLLM, StepLLMConfig

__all__ = ["STEP_LLM_KEYS", "convert_step_llm", "load_step_llm", "read_step_llm_config"]

_L = r"transformer\.layers\.(?P<layer>\d+)\."

STEP_LLM_KEYS: list[Rule] = [
    Rule(r"tok_embeddings\.word_embeddings\.weight", "tok_embeddings.embedding", identity),
    Rule(_L + r"attention_norm\.weight", "layers.attention_norm"),
    Rule(_L + r"ffn_norm\.weight", "layers.ffn_norm"),
    Rule(_L + r"attention\.wq\.weight", "layers.attention.wq.kernel", linear_to),  # -> (D, H, hd)
    Rule(_L + r"attention\.wkv\.weight", "layers.attention.wkv.kernel", linear_to),  # -> (D, G, 2*hd)
    Rule(_L + r"attention\.wo\.weight", "layers.attention.wo.kernel", linear_to),  # -> (H, hd, D)
    Rule(_L + r"feed_forward\.w_(?P<part>gate|up)\.weight", "layers.feed_forward.w_{part}.kernel", linear),
    Rule(_L + r"feed_forward\.w2\.weight", "layers.feed_forward.w2.kernel", linear),
]

_FUSED = re.compile(r"(?P<prefix>transformer\.layers\.\d+\.)(?P<name>attention\.wqkv|feed_forward\.w1)\.weight")


class _SplitFused(Mapping):
    """Read-only view of a Step-LLM checkpoint with the fused `wqkv` / `w1` split into two keys each."""

    def __init__(self, tensors: Mapping[str, np.ndarray] | TensorSource, cfg: StepLLMConfig):
        self._tensors = tensors
        self._cfg = cfg
        self._virtual: dict[str, tuple[str, int]] = {}  # virtual key -> (source key, part 0/1)
        self._keys: list[str] = []
        for key in tensors.keys():
            m = _FUSED.fullmatch(key)
            if m is None:
                self._keys.append(key)
                continue
            p = m["prefix"]
            parts = (
                ("attention.wq", "attention.wkv")
                if m["name"] == "attention.wqkv"
                else (
                    "feed_forward.w_gate",
                    "feed_forward.w_up",
                )
            )
            for i, part in enumerate(parts):
                self._virtual[f"{p}{part}.weight"] = (key, i)
                self._keys.append(f"{p}{part}.weight")

    def _split_rows(self, key: str) -> int:
        """Row index where the fused tensor `key` splits, checking its full row count."""
        cfg = self._cfg
        if key.endswith("attention.wqkv.weight"):
            rows, split = cfg.hidden_size + 2 * cfg.num_groups * cfg.head_dim, cfg.hidden_size
        else:
            rows, split = 2 * cfg.ffn_dim, cfg.ffn_dim
        shape = self._tensors.shape(key) if isinstance(self._tensors, TensorSource) else np.shape(self._tensors[key])
        if len(shape) != 2 or shape[0] != rows:
            raise ConversionError(
                f"key {key}: shape {tuple(shape)}, expected ({rows}, {cfg.hidden_size}) for this config "
                f"(hidden {cfg.hidden_size}, heads {cfg.num_heads}, groups {cfg.num_groups}, ffn {cfg.ffn_dim})"
            )
        return split

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._virtual:
            t = self._tensors
            return t.get(key) if isinstance(t, TensorSource) else np.asarray(t[key])
        source, part = self._virtual[key]
        split = self._split_rows(source)
        t = self._tensors
        full = t.get(source) if isinstance(t, TensorSource) else np.asarray(t[source])
        return full[:split] if part == 0 else full[split:]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self):  # list, in checkpoint order (the core iterates it once)
        return list(self._keys)

    def file_of(self, key: str) -> str | None:  # lets the core's errors name the file
        file_of = getattr(self._tensors, "file_of", None)
        return file_of(self._virtual.get(key, (key, 0))[0]) if file_of is not None else None


def read_step_llm_config(path: str | os.PathLike) -> dict[str, Any]:
    """Reads `config.json` from a released `step_llm/` folder (or the file itself)."""
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: Step-LLM config.json not found (expected a released step_llm/ folder)")
    with open(file) as f:
        return json.load(f)


def convert_step_llm(tensors, cfg: StepLLMConfig, *, dtype=None) -> dict:
    """Released Step-LLM tensors -> {nnx path: array} for `StepLLM(cfg)`."""
    abstract = nnx.eval_shape(lambda: StepLLM(cfg, rngs=nnx.Rngs(0)))
    return convert(
        _SplitFused(tensors, cfg), STEP_LLM_KEYS, flat_param_paths(abstract), stacked_prefixes=("layers.",), dtype=dtype
    )


def load_step_llm(
    weights: str | os.PathLike | Mapping,
    config: StepLLMConfig | Mapping[str, Any] | None = None,
    **overrides,
) -> StepLLM:
    """Loads a released Step-LLM: `weights` is a `step_llm/` folder (config.json + sharded
    safetensors with index), a safetensors file or index, or a {key: array} mapping; `config` a
    StepLLMConfig or the release's config dict (`overrides` set runtime fields, e.g. param_dtype)."""
    if config is None:
        if isinstance(weights, Mapping):
            raise ValueError("load_step_llm needs a config when weights are given as a mapping")
        config = read_step_llm_config(weights)
    if isinstance(config, StepLLMConfig):
        cfg = dataclasses.replace(config, **overrides)
    else:
        cfg = StepLLMConfig.from_release(config, **overrides)
    tensors = weights if isinstance(weights, Mapping) else TensorSource(weights)
    arrays = convert_step_llm(tensors, cfg)
    return build_model(lambda: StepLLM(cfg, rngs=nnx.Rngs(0)), arrays)
