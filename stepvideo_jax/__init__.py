"""stepvideo-jax: Step-Video-TI2V (and T2V) in JAX / Flax NNX.

The networks (`StepVideoDiT`, `VideoVAE`, `StepLLM`, `HunyuanCLIP`), their configs, the converter
from the released checkpoints (`stepvideo_jax.convert`), Orbax restore (`restore_component`), the
flow-matching sampler and the pipeline (`stepvideo_jax.diffusion`), and the Python API
(`TI2VPipeline`, `TextToVideoPipeline`; see `stepvideo_jax.api`).
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
    "TI2VPipeline",
    "TextToVideoPipeline",
    "GenerationOutput",
]
_API = ("TI2VPipeline", "TextToVideoPipeline", "GenerationOutput")
__version__ = "0.1.0"


def __getattr__(name: str):
    # The pipelines load lazily, so `import stepvideo_jax` does not import the sampler, VAE I/O, etc.
    if name in _API:
        from stepvideo_jax import api

        return getattr(api, name)
    raise AttributeError(f"module 'stepvideo_jax' has no attribute {name!r}")
