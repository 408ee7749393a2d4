"""The Step-Video Video-VAE version 2: config, model, converter entry point."""

from stepvideo_jax.vae.config import VAEConfig
from stepvideo_jax.vae.model import VideoVAE


def load_vae(weights, config=None, **overrides):
    """Loads the released `vae/vae_v2.safetensors` (or a {key: array} mapping); see
    `stepvideo_jax.convert.vae.load_vae`."""
    from stepvideo_jax.convert.vae import load_vae as _load_vae

    return _load_vae(weights, config, **overrides)


__all__ = ["VAEConfig", "VideoVAE", "load_vae"]
