"""Converters from the released PyTorch checkpoints: one key table per network, one core."""

from stepvideo_jax.convert.core import ConversionError, Rule, TensorSource, build_model, convert, flat_param_paths
from stepvideo_jax.convert.dit import DIT_RULES, convert_dit, load_dit, read_dit_config

__all__ = [
    "ConversionError",
    "Rule",
    "TensorSource",
    "build_model",
    "convert",
    "flat_param_paths",
    "DIT_RULES",
    "convert_dit",
    "load_dit",
    "read_dit_config",
]
