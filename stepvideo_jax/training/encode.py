"""Online encoding of raw training clips: VAE latents, noise-augmented first-frame condition, text states.

Used by the training loop when it reads raw videos, and by ``tools/precompute.py`` to write the same
arrays to files once. ``vae.encode(video (b, f, 3, H, W), rng)`` returns latents in the release layout
(b, f', C, h, w); ``prompts.encode_prompts(list[str])`` returns (llm_states [b, L, C_llm],
mask [b, 77 + L] (CLIP ones then the LLM mask; an LLM-only [b, L] mask is accepted too),
clip_states [b, 77, C_clip]); the files and batches keep only the LLM mask. Results here are channels-last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stepvideo_jax.training.objective import ObjectiveConfig, augment_condition_image

__all__ = ["ClipEncoder", "encode_text"]


def _to_channels_last(latents: jax.Array) -> jax.Array:
    return jnp.transpose(latents, (0, 1, 3, 4, 2))  # (b, f', C, h, w) -> [b, f', h, w, C]


def encode_text(prompts, captions: Sequence[str]) -> dict[str, np.ndarray]:
    """Text arrays of the captions; the LLM part of the mask is kept (the CLIP part is all ones)."""
    llm_states, mask, clip_states = prompts.encode_prompts(list(captions))
    llm_len, clip_len = llm_states.shape[1], clip_states.shape[1]
    if mask.shape[1] == clip_len + llm_len:  # PromptEncoder's model mask: [CLIP ones | LLM mask]
        llm_mask = mask[:, clip_len:]
    elif mask.shape[1] == llm_len:
        llm_mask = mask
    else:
        raise ValueError(
            f"text mask must be (batch, {clip_len} + {llm_len}) or (batch, {llm_len}); got {tuple(mask.shape)}"
        )
    return {
        "llm_states": np.asarray(llm_states, np.float32),
        "llm_mask": np.asarray(llm_mask, np.int32),
        "clip_states": np.asarray(clip_states, np.float32),
    }


class ClipEncoder:
    """Raw batch {"video" [B, F, H, W, 3] in [-1, 1], "caption", "motion_score"} -> latent batch."""

    def __init__(self, vae, prompts, objective: ObjectiveConfig):
        self.vae, self.prompts, self.objective = vae, prompts, objective

    def __call__(self, batch: Mapping[str, Any], rng: jax.Array) -> dict[str, np.ndarray]:
        video = jnp.asarray(batch["video"], jnp.float32)  # [B, F, H, W, 3]
        k_vae, k_cond, k_cvae = jax.random.split(rng, 3)
        latents = self.vae.encode(jnp.transpose(video, (0, 1, 4, 2, 3)), rng=k_vae)  # (b, f', C, h, w)
        # The condition image gets its noise in pixel space, before the VAE (as the objective says).
        first = augment_condition_image(video[:, 0], k_cond, self.objective)  # [B, H, W, 3]
        cond = self.vae.encode(jnp.transpose(first, (0, 3, 1, 2))[:, None], rng=k_cvae)  # (b, 1, C, h, w)
        out = {
            "latents": np.asarray(_to_channels_last(latents), np.float32),
            "condition": np.asarray(_to_channels_last(cond), np.float32),
            "motion_score": np.asarray(batch["motion_score"], np.float32),
        }
        out.update(encode_text(self.prompts, batch["caption"]))
        return out

    def null_text(self, prompt: str = "") -> dict[str, np.ndarray]:
        """The unbatched text arrays of the prompt that replaces dropped captions."""
        return {k: v[0] for k, v in encode_text(self.prompts, [prompt]).items()}
