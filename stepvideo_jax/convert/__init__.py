"""Converters from the released PyTorch checkpoints: one key table per network, one core."""

from stepvideo_jax.convert.clip import convert_hunyuan_clip, load_hunyuan_clip, read_torch_bin
from stepvideo_jax.convert.core import ConversionError, Rule, TensorSource, build_model, convert, flat_param_paths
from stepvideo_jax.convert.dit import DIT_KEYS, convert_dit, load_dit, read_dit_config
from stepvideo_jax.convert.step_llm import convert_step_llm, load_step_llm, read_step_llm_config
from stepvideo_jax.convert.vae import VAE_KEYS, convert_vae, load_vae

__all__ = [
    "ConversionError",
    "Rule",
    "TensorSource",
    "build_model",
    "convert",
    "flat_param_paths",
    "DIT_KEYS",
    "convert_dit",
    "load_dit",
    "read_dit_config",
    "VAE_KEYS",
    "convert_vae",
    "load_vae",
    "convert_step_llm",
    "load_step_llm",
    "read_step_llm_config",
    "convert_hunyuan_clip",
    "load_hunyuan_clip",
    "read_torch_bin",
]
