"""stepvideo-jax: Step-Video-TI2V in JAX / Flax NNX."""

from stepvideo_jax.dit import DiTConfig, StepVideoDiT

__all__ = ["DiTConfig", "StepVideoDiT"]
__version__ = "0.1.0"
