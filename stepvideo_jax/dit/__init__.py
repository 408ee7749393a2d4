"""The Step-Video DiT: config, model, sharding rules."""

from stepvideo_jax.dit.config import DiTConfig
from stepvideo_jax.dit.model import DiTInputs, StepVideoDiT
from stepvideo_jax.dit.sharding import DIT_SHARDING

__all__ = ["DiTConfig", "DiTInputs", "StepVideoDiT", "DIT_SHARDING"]
