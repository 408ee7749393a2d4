"""The VAE's logical-axis rules (`sharded_vae_decode` in `vae.model` spreads the decode with them).

The VAE is convolutional (~0.5B parameters): weights are replicated; the decode spreads its chunks
of latent frames (17 output frames each) over every mesh axis, as the release spreads them over ranks.
"""

from stepvideo_jax.sharding import ShardingRules

__all__ = ["VAE_SHARDING"]

VAE_SHARDING = ShardingRules.make(
    "vae",
    params=dict(conv_in=None, conv_out=None, norm=None),
    activations=dict(chunk=("data", "fsdp", "sequence", "tensor"), batch=("data", "fsdp"), frames=None),
)
