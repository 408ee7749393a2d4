"""The rectified-flow training objective, in the sampler's convention (t = 0 noise, t = 1 data).

    x_t = (1 - t) * noise + t * x_data,        target v = x_data - noise,        loss = mean (v_pred - v)^2

The noise level u = 1 - t is drawn uniformly or logit-normally and then time-shifted with the
sampler's own rule ``shift_time(u, s) = s u / (1 + (s - 1) u)``, so a shift s > 1 trains more at high
noise, as the shifted sampler spends its steps there. Image conditioning: the first frame, with
Gaussian noise of a per-example strength added in pixel space *before* VAE encoding
(``augment_condition_image``), encodes to one latent frame that is zero-padded to the clip's latent
frames, as the sampler does. Caption dropout replaces an example's text states by those of the empty
(or negative) prompt with probability ``caption_dropout``, for classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from stepvideo_jax.diffusion.flow_match import shift_time

__all__ = [
    "ObjectiveConfig",
    "sample_timesteps",
    "interpolate",
    "velocity_target",
    "condition_noise_strength",
    "augment_condition_image",
    "pad_condition",
    "drop_captions",
    "model_text_mask",
    "flow_matching_loss",
]


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    timestep_sampling: str = "logit_normal"  # "uniform" or "logit_normal" (on the noise level u = 1 - t)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    time_shift: float = 1.0  # applied to u like the sampler (1.0: none)
    caption_dropout: float = 0.1
    cond_noise: str = "lognormal"  # "none", "uniform" (in [min, max]) or "lognormal" (exp N(mean, std))
    cond_noise_min: float = 0.0
    cond_noise_max: float = 0.1
    cond_noise_mean: float = -3.0
    cond_noise_std: float = 0.5

    def __post_init__(self):
        if self.timestep_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"timestep_sampling must be 'uniform' or 'logit_normal'; got {self.timestep_sampling!r}")
        if self.cond_noise not in ("none", "uniform", "lognormal"):
            raise ValueError(f"cond_noise must be 'none', 'uniform' or 'lognormal'; got {self.cond_noise!r}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be a probability in [0, 1]; got {self.caption_dropout}")
        if not self.time_shift > 0:
            raise ValueError(f"time_shift must be > 0; got {self.time_shift}")


def sample_timesteps(rng: jax.Array, batch: int, cfg: ObjectiveConfig) -> jax.Array:
    """[B] float32 t in (0, 1), t = 1 data: noise level u sampled, shifted, t = 1 - u."""
    if cfg.timestep_sampling == "uniform":
        u = jax.random.uniform(rng, (batch,), jnp.float32)
    else:
        u = jax.nn.sigmoid(cfg.logit_mean + cfg.logit_std * jax.random.normal(rng, (batch,), jnp.float32))
    return 1.0 - shift_time(u, jnp.float32(cfg.time_shift))


def _bcast(t: jax.Array, x: jax.Array) -> jax.Array:
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)).astype(x.dtype)


def interpolate(x_data: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    t = _bcast(t, x_data)
    return (1.0 - t) * noise + t * x_data


def velocity_target(x_data: jax.Array, noise: jax.Array) -> jax.Array:
    return x_data - noise


def condition_noise_strength(rng: jax.Array, batch: int, cfg: ObjectiveConfig) -> jax.Array:
    """[B] standard deviation of the pixel noise added to each example's condition image."""
    if cfg.cond_noise == "none":
        return jnp.zeros((batch,), jnp.float32)
    if cfg.cond_noise == "uniform":
        return jax.random.uniform(rng, (batch,), jnp.float32, cfg.cond_noise_min, cfg.cond_noise_max)
    return jnp.exp(cfg.cond_noise_mean + cfg.cond_noise_std * jax.random.normal(rng, (batch,), jnp.float32))


def augment_condition_image(image: jax.Array, rng: jax.Array, cfg: ObjectiveConfig) -> jax.Array:
    """[B, H, W, 3] image in [-1, 1] + sigma_b * N(0, 1) with sigma_b per example (before VAE encoding)."""
    k_sigma, k_noise = jax.random.split(rng)
    sigma = condition_noise_strength(k_sigma, image.shape[0], cfg)
    return image + _bcast(sigma, image) * jax.random.normal(k_noise, image.shape, image.dtype)


def pad_condition(condition: jax.Array, frames: int) -> jax.Array:
    """[B, 1, h, w, C] first-frame latents -> [B, frames, h, w, C], zeros after the first frame."""
    if condition.ndim != 5 or condition.shape[1] > frames:
        raise ValueError(f"condition latents must be (batch, <= {frames}, h, w, C); got {tuple(condition.shape)}")
    return jnp.pad(condition, ((0, 0), (0, frames - condition.shape[1]), (0, 0), (0, 0), (0, 0)))


def drop_captions(rng: jax.Array, text: Mapping[str, jax.Array], null_text: Mapping[str, jax.Array], p: float):
    """Replaces each example's text arrays by the null prompt's (unbatched) arrays with probability p."""
    b = text["llm_states"].shape[0]
    drop = jax.random.bernoulli(rng, p, (b,))
    out = {}
    for k, v in text.items():
        null = jnp.broadcast_to(null_text[k].astype(v.dtype), v.shape)
        out[k] = jnp.where(_bcast(drop, v).astype(bool), null, v)
    return out, drop


def model_text_mask(llm_mask: jax.Array, clip_len: int) -> jax.Array:
    """[B, L_llm] -> [B, L_clip + L_llm]: the CLIP tokens are all kept, as released."""
    return jnp.concatenate([jnp.ones((llm_mask.shape[0], clip_len), llm_mask.dtype), llm_mask], axis=1)


def flow_matching_loss(
    model,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    cfg: ObjectiveConfig,
    null_text: Mapping[str, jax.Array] | None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Loss of one batch of precomputed (or online-encoded) latents.

    batch: ``latents`` [B, F, h, w, C], ``condition`` [B, 1, h, w, C] (or None for T2V),
    ``llm_states`` [B, L, C_llm], ``llm_mask`` [B, L], ``clip_states`` [B, 77, C_clip] (optional),
    ``motion_score`` [B]. null_text holds the empty prompt's unbatched ``llm_states``/``llm_mask``/``clip_states``.
    """
    x = batch["latents"].astype(jnp.float32)
    b, f = x.shape[0], x.shape[1]
    k_t, k_noise, k_drop = jax.random.split(rng, 3)
    t = sample_timesteps(k_t, b, cfg)  # [B]
    noise = jax.random.normal(k_noise, x.shape, jnp.float32)
    x_t = interpolate(x, noise, t)
    target = velocity_target(x, noise)

    text = {k: batch[k] for k in ("llm_states", "llm_mask", "clip_states") if batch.get(k) is not None}
    dropped = jnp.zeros((b,), bool)
    if null_text is not None and cfg.caption_dropout > 0:
        text, dropped = drop_captions(k_drop, text, {k: null_text[k] for k in text}, cfg.caption_dropout)
    clip = text.get("clip_states")
    mask = model_text_mask(text["llm_mask"], 0 if clip is None else clip.shape[1])
    condition = batch.get("condition")
    if condition is not None:
        condition = pad_condition(condition.astype(jnp.float32), f)
    motion = batch.get("motion_score")

    v_pred = model.forward(x_t, t, text["llm_states"], mask, clip, condition, motion)
    loss = jnp.mean(jnp.square(v_pred.astype(jnp.float32) - target))
    return loss, {"t": t, "caption_dropped": dropped}
