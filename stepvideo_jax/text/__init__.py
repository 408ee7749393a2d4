"""Text encoders of Step-Video: the Step-LLM (Step-1) and HunyuanCLIP (BERT), their tokenizers, their
sharding rules, and the release's prompt encoding (`PromptEncoder.encode_prompts`)."""

from stepvideo_jax.text.clip import ClipConfig, HunyuanCLIP
from stepvideo_jax.text.prompt import PromptEncoder
from stepvideo_jax.text.sharding import TEXT_SHARDING
from stepvideo_jax.text.step_llm import StepLLM, StepLLMConfig
from stepvideo_jax.text.tokenizers import ClipTokenizer, StepTokenizer

__all__ = [
    "StepLLMConfig",
    "StepLLM",
    "StepTokenizer",
    "ClipConfig",
    "HunyuanCLIP",
    "ClipTokenizer",
    "PromptEncoder",
    "TEXT_SHARDING",
]
