"""Text encoders of Step-Video: the Step-LLM (Step-1) and HunyuanCLIP (BERT), their tokenizers, and
the release's prompt encoding (`PromptEncoder.encode_prompts`)."""

from stepvideo_jax.text.clip import ClipConfig, HunyuanCLIP
from stepvideo_jax.text.step_llm import StepLLM, StepLLMConfig
from stepvideo_jax.text.tokenizers import ClipTokenizer, StepTokenizer
from stepvideo_jax.text.prompt import PromptEncoder
from stepvideo_jax.text.tiny import build_tiny_tokenizers

__all__ = [
    "StepLLMConfig",
    "StepLLM",
    "load_step_llm",
    "StepTokenizer",
    "ClipConfig",
    "HunyuanCLIP",
    "load_hunyuan_clip",
    "ClipTokenizer",
    "PromptEncoder",
    "build_tiny_tokenizers",
]


def __getattr__(name: str):
    # The loaders live in stepvideo_jax.convert, which imports this package's modules: resolve them
    # lazily so either package can be imported first.
    if name == "load_step_llm":
        from stepvideo_jax.convert.step_llm import load_step_llm

        return load_step_llm
    if name == "load_hunyuan_clip":
        from stepvideo_jax.convert.clip import load_hunyuan_clip

        return load_hunyuan_clip
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
