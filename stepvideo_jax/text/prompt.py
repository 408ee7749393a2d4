"""Prompt encoding as the release does it (`CaptionPipeline.embedding`), with caches.

`encode_prompts(prompts)` returns
  llm_states  [B, L_llm, D_llm]   Step-LLM last hidden states (L_llm = the Step tokenizer's 320),
  mask        [B, L_clip + L_llm] int32: L_clip ones (every CLIP position, padding included, as the
                                  release pads the LLM mask on the left with ones), then the LLM mask,
  clip_states [B, L_clip, D_clip] HunyuanCLIP `last_hidden_state` (L_clip = 77), computed with its
                                  padding mask.

Each prompt is encoded independently of the others in its batch (no cross-sample interaction in
either encoder), so results are cached per prompt. Prompts missing from the cache are run through the
encoders in groups of a fixed size (`encode_batch`, default 2: a prompt and its negative), the last
group padded by repeating its last prompt, so the encoders compile once: a later call whose negative
prompt is already cached encodes one new prompt with the same program instead of compiling a batch-1
one. Cached per prompt: in memory (LRU, device arrays) and optionally on
disk, one safetensors file per prompt keyed by sha256(model fingerprint, prompt). The fingerprint
covers both configs, both tokenizers' files and lengths, and a digest (sum, sum of squares) of every
parameter; pass `fingerprint=` to name the models yourself and skip computing it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepvideo_jax.files import atomic_path
from stepvideo_jax.text.clip import HunyuanCLIP
from stepvideo_jax.text.step_llm import StepLLM
from stepvideo_jax.text.tokenizers import ClipTokenizer, StepTokenizer, as_prompt_list

__all__ = ["PromptEncoder", "model_fingerprint"]

_CACHE_FORMAT = "stepvideo-jax/text-cache/v1"


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _param_digest(model: nnx.Module) -> list:
    """[(path, shape, dtype, sum, sum of squares)] of every parameter, reduced on device."""
    flat = [(".".join(map(str, p)), v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    arrays = [a for _, a in flat]
    sums = jax.jit(
        lambda xs: [jnp.stack([jnp.sum(x, dtype=jnp.float32), jnp.sum(jnp.square(x.astype(jnp.float32)))]) for x in xs]
    )(arrays)
    sums = jax.device_get(sums)
    return [(name, list(a.shape), str(a.dtype), [float(s) for s in np.asarray(d)]) for (name, a), d in zip(flat, sums)]


def model_fingerprint(
    step_llm: StepLLM, step_tokenizer: StepTokenizer, clip: HunyuanCLIP, clip_tokenizer: ClipTokenizer
) -> str:
    """sha256 over the configs, the tokenizer files and lengths, and a digest of every parameter."""
    clip_files = (
        sorted(os.path.join(clip_tokenizer.path, f) for f in os.listdir(clip_tokenizer.path))
        if os.path.isdir(clip_tokenizer.path)
        else [clip_tokenizer.path]
    )
    desc = {
        "format": _CACHE_FORMAT,
        "step_llm": repr(step_llm.cfg),
        "clip": repr(clip.cfg),
        "step_tokenizer": [_file_sha256(step_tokenizer.model_file), step_tokenizer.max_length],
        "clip_tokenizer": [[os.path.basename(f), _file_sha256(f)] for f in clip_files if os.path.isfile(f)]
        + [clip_tokenizer.max_length],
        "step_llm_params": _param_digest(step_llm),
        "clip_params": _param_digest(clip),
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


class PromptEncoder:
    """`PromptEncoder(step_llm, step_tokenizer, clip, clip_tokenizer, *, cache_dir=None)`;
    `.encode_prompts(list[str]) -> (llm_states, mask, clip_states)` (see the module docstring)."""

    def __init__(
        self,
        step_llm: StepLLM,
        step_tokenizer: StepTokenizer,
        clip: HunyuanCLIP,
        clip_tokenizer: ClipTokenizer,
        *,
        cache_dir: str | os.PathLike | None = None,
        fingerprint: str | None = None,
        max_cached: int = 32,
        encode_batch: int = 2,
    ):
        if clip_tokenizer.max_length > clip.cfg.max_position_embeddings:
            raise ValueError(
                f"CLIP tokenizer max_length {clip_tokenizer.max_length} exceeds the model's "
                f"max_position_embeddings {clip.cfg.max_position_embeddings}"
            )
        if max_cached < 0:
            raise ValueError(f"max_cached must be >= 0; got {max_cached}")
        if encode_batch < 1:
            raise ValueError(f"encode_batch must be >= 1; got {encode_batch}")
        self.encode_batch = encode_batch
        self.step_llm, self.step_tokenizer = step_llm, step_tokenizer
        self.clip, self.clip_tokenizer = clip, clip_tokenizer
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.max_cached = max_cached
        self._fingerprint = fingerprint
        self._memory: collections.OrderedDict[str, tuple[jax.Array, jax.Array, jax.Array]] = collections.OrderedDict()
        self.num_encoded = 0  # prompts actually run through the encoders (cache misses)
        self.num_disk_hits = 0
        llm_def, llm_state = nnx.split(step_llm)
        clip_def, clip_state = nnx.split(clip)
        self._llm_state, self._clip_state = llm_state, clip_state

        @jax.jit
        def _encode(llm_state, clip_state, llm_ids, llm_mask, clip_ids, clip_mask):
            llm_states = nnx.merge(llm_def, llm_state)(llm_ids, llm_mask)  # [B, L_llm, D_llm]
            clip_states, _ = nnx.merge(clip_def, clip_state)(clip_ids, clip_mask)  # [B, L_clip, D_clip]
            return llm_states, clip_states

        self._encode = _encode

    # ------------------------------------------------------------------ public
    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.step_llm, self.step_tokenizer, self.clip, self.clip_tokenizer)
        return self._fingerprint

    def encode_prompts(self, prompts: str | Sequence[str]) -> tuple[jax.Array, jax.Array, jax.Array]:
        prompts = as_prompt_list(prompts)
        found: dict[str, tuple[jax.Array, jax.Array, jax.Array]] = {}
        missing: list[str] = []
        for p in dict.fromkeys(prompts):  # unique, in order
            hit = self._memory_get(p)
            if hit is None and self.cache_dir is not None:
                hit = self._disk_get(p)
            if hit is None:
                missing.append(p)
            else:
                found[p] = hit
        for start in range(0, len(missing), self.encode_batch):
            group = missing[start : start + self.encode_batch]
            for p, entry in zip(group, self._encode_batch(group)):
                found[p] = entry
                if self.cache_dir is not None:
                    self._disk_put(p, entry)
        for p, entry in found.items():
            self._memory_put(p, entry)
        llm_states = jnp.stack([found[p][0] for p in prompts])  # [B, L_llm, D_llm]
        llm_mask = jnp.stack([found[p][1] for p in prompts])  # [B, L_llm]
        clip_states = jnp.stack([found[p][2] for p in prompts])  # [B, L_clip, D_clip]
        clip_ones = jnp.ones((len(prompts), clip_states.shape[1]), jnp.int32)
        mask = jnp.concatenate([clip_ones, llm_mask], axis=1)  # [B, L_clip + L_llm]
        return llm_states, mask, clip_states

    def clear_cache(self) -> None:
        """Empties the in-process cache (the on-disk cache is left alone)."""
        self._memory.clear()

    # ------------------------------------------------------------------ pieces
    def _encode_batch(self, prompts: list[str]) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
        """Encodes up to `encode_batch` prompts as one batch of exactly `encode_batch` rows (padded by
        repeating the last prompt, so every call has the same shapes); returns one entry per prompt."""
        padded = prompts + [prompts[-1]] * (self.encode_batch - len(prompts))
        llm_ids, llm_mask = self.step_tokenizer(padded)
        clip_ids, clip_mask = self.clip_tokenizer(padded)
        llm_states, clip_states = self._encode(
            self._llm_state,
            self._clip_state,
            jnp.asarray(llm_ids),
            jnp.asarray(llm_mask),
            jnp.asarray(clip_ids),
            jnp.asarray(clip_mask),
        )
        self.num_encoded += len(prompts)
        mask = jnp.asarray(llm_mask)
        return [(llm_states[i], mask[i], clip_states[i]) for i in range(len(prompts))]

    def _memory_get(self, prompt: str):
        entry = self._memory.get(prompt)
        if entry is not None:
            self._memory.move_to_end(prompt)
        return entry

    def _memory_put(self, prompt: str, entry) -> None:
        if self.max_cached == 0:
            return
        self._memory[prompt] = entry
        self._memory.move_to_end(prompt)
        while len(self._memory) > self.max_cached:
            self._memory.popitem(last=False)

    def _disk_path(self, prompt: str) -> str:
        key = hashlib.sha256(f"{self.fingerprint}\0{prompt}".encode()).hexdigest()
        return os.path.join(self.cache_dir, f"{key}.safetensors")

    def _disk_get(self, prompt: str):
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = self._disk_path(prompt)
        if not os.path.isfile(path):
            return None
        with safe_open(path, "np") as f:
            meta = f.metadata() or {}
        if meta.get("prompt") != prompt or meta.get("fingerprint") != self.fingerprint:
            raise ValueError(f"{path}: prompt cache entry does not belong to this prompt/model; delete the file")
        arrays = load_file(path)
        self.num_disk_hits += 1
        return (jnp.asarray(arrays["llm_states"]), jnp.asarray(arrays["llm_mask"]), jnp.asarray(arrays["clip_states"]))

    def _disk_put(self, prompt: str, entry) -> None:
        from safetensors.numpy import save_file

        os.makedirs(self.cache_dir, exist_ok=True)
        path = self._disk_path(prompt)
        tensors = {
            name: np.asarray(jax.device_get(a)) for name, a in zip(("llm_states", "llm_mask", "clip_states"), entry)
        }
        with atomic_path(path) as tmp:
            metadata = {"format": _CACHE_FORMAT, "prompt": prompt, "fingerprint": self.fingerprint}
            save_file(tensors, tmp, metadata=metadata)
