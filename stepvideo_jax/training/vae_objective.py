"""The Video-VAE training objective: reconstruction of clips (and of their first frame alone) + KL.

For a batch of one-chunk clips ``video`` [B, F, H, W, 3] in [-1, 1] (F = the VAE's ``frame_len``):

    moments = encoder(video);  z = mean + exp(logvar / 2) * eps          (the posterior sample)
    loss = recon(decoder(z), video)
         + image_weight * recon(decoder(z_0), video[:, :1])              (frame 0 encoded alone)
         + kl_weight * mean over latent elements of KL(N(mean, var) || N(0, 1))

``recon`` is the mean absolute ("l1") or squared ("l2") error per pixel and channel. The image term
trains the one-frame path that TI2V uses for its condition image (the release encodes the first
frame on its own), and frame 0 is only 1/F of the clip term. The KL is averaged per latent element
(not summed), so ``kl_weight`` does not depend on the resolution; it keeps the latents near unit
scale for the DiT (the release applies no latent scaling factor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["VAEObjectiveConfig", "gaussian_kl", "vae_loss"]


@dataclasses.dataclass(frozen=True)
class VAEObjectiveConfig:
    recon: str = "l1"  # "l1" or "l2"
    kl_weight: float = 1e-4
    image_weight: float = 1.0  # weight of the first frame reconstructed from its own one-frame latent

    def __post_init__(self):
        if self.recon not in ("l1", "l2"):
            raise ValueError(f"recon must be 'l1' or 'l2'; got {self.recon!r}")
        if self.kl_weight < 0 or self.image_weight < 0:
            raise ValueError(f"kl_weight and image_weight must be >= 0; got {self.kl_weight}, {self.image_weight}")


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def _recon(x: jax.Array, target: jax.Array, kind: str) -> jax.Array:
    d = x.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.mean(jnp.abs(d)) if kind == "l1" else jnp.mean(jnp.square(d))


def _posterior(model, video: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    moments = model.encoder(video).astype(jnp.float32)  # [B, F', h, w, 2z]
    mean, logvar = jnp.split(moments, 2, axis=-1)
    logvar = jnp.clip(logvar, *model.cfg.logvar_clip)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, jnp.float32)
    return z, mean, logvar


def vae_loss(
    model, batch: Mapping[str, jax.Array], rng: jax.Array, cfg: VAEObjectiveConfig
) -> tuple[jax.Array, dict[str, Any]]:
    """Loss of one batch {"video": [B, F, H, W, 3] in [-1, 1]} (F = frame_len, one chunk)."""
    video = batch["video"]
    frame_len = model.cfg.frame_len
    if video.ndim != 5 or video.shape[1] != frame_len or video.shape[-1] != model.cfg.in_channels:
        raise ValueError(
            f"VAE training clips must be (batch, {frame_len}, height, width, {model.cfg.in_channels}); got {tuple(video.shape)}"
        )
    k_clip, k_image = jax.random.split(rng)
    z, mean, logvar = _posterior(model, video, k_clip)
    clip_loss = _recon(model.decoder(z), video, cfg.recon)
    kl = jnp.mean(gaussian_kl(mean, logvar))
    loss = clip_loss + cfg.kl_weight * kl
    aux: dict[str, Any] = {"clip_recon": clip_loss, "kl": kl}
    if cfg.image_weight > 0:
        first = video[:, :1]  # [B, 1, H, W, 3]
        z1, _, _ = _posterior(model, first, k_image)
        image_loss = _recon(model.decoder(z1), first, cfg.recon)
        loss = loss + cfg.image_weight * image_loss
        aux["image_recon"] = image_loss
    return loss, aux
