"""The Step-Video DiT."""

from stepvideo_jax.dit.config import DiTConfig
from stepvideo_jax.dit.model import StepVideoDiT

__all__ = ["DiTConfig", "StepVideoDiT"]
