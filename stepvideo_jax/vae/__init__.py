"""The Step-Video Video-VAE version 2: config, model, sharding rules."""

from stepvideo_jax.vae.config import VAEConfig
from stepvideo_jax.vae.model import VideoVAE, sharded_vae_decode
from stepvideo_jax.vae.sharding import VAE_SHARDING

__all__ = ["VAEConfig", "VideoVAE", "VAE_SHARDING", "sharded_vae_decode"]
