"""The Step-Video DiT."""

from stepvideo_jax.dit.config import DiTConfig
from stepvideo_jax.dit.model import DiTInputs, StepVideoDiT

__all__ = ["DiTConfig", "DiTInputs", "StepVideoDiT"]
