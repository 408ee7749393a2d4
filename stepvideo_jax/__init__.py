"""stepvideo-jax: Step-Video-TI2V (and T2V) in JAX / Flax NNX.

The networks (`StepVideoDiT`, `VideoVAE`, `StepLLM`, `HunyuanCLIP`), their configs, the converter
from the released checkpoints (`stepvideo_jax.convert`), Orbax restore (`restore_component`), the
flow-matching sampler and the pipeline (`stepvideo_jax.diffusion`).
"""

from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.text import ClipConfig, HunyuanCLIP, PromptEncoder, StepLLM, StepLLMConfig
from stepvideo_jax.vae import VAEConfig, VideoVAE

__all__ = [
    "DiTConfig",
    "StepVideoDiT",
    "VAEConfig",
    "VideoVAE",
    "StepLLMConfig",
    "StepLLM",
    "ClipConfig",
    "HunyuanCLIP",
    "PromptEncoder",
]
__version__ = "0.1.0"
