"""Tiny text encoders for tests and the sampler's `tiny` config: a sentencepiece model trained on a
few lines, a small BERT vocab, small configs, and randomly initialised encoders.

Everything here is deterministic (same inputs -> byte-identical files, same seed -> same weights)
and fast (well under a second).
"""

from __future__ import annotations

import io
import os
import string
from typing import Callable, Sequence

import numpy as np
from flax import nnx

from stepvideo_jax.convert.core import build_model
from stepvideo_jax.text.clip import ClipConfig, HunyuanCLIP
from stepvideo_jax.text.step_llm import StepLLM, StepLLMConfig

__all__ = [
    "DEFAULT_TEXTS",
    "TINY_SPM_VOCAB",
    "TINY_BERT_VOCAB",
    "build_tiny_tokenizers",
    "tiny_step_llm_config",
    "tiny_clip_config",
    "build_tiny_prompt_encoder",
    "random_text_encoder",
]

DEFAULT_TEXTS: tuple[str, ...] = (
    "a cat walks along the beach at sunset",
    "a dog runs through a green field of flowers",
    "the camera slowly pans over a city at night",
    "waves crash against dark rocks under a cloudy sky",
    "a red car drives along a winding mountain road",
    "a woman smiles and turns her head toward the camera",
    "ultra high definition, cinematic lighting, smooth motion",
    "low quality, blurry, distorted, watermark, static frame",
)

TINY_SPM_VOCAB = 320  # 256 byte-fallback pieces + specials + a few merges: any text maps to known ids
TINY_BERT_VOCAB = 256  # upper bound on the tiny BERT vocab.txt size
SPM_FILE = "step1_chat_tokenizer.model"
CLIP_TOKENIZER_DIR = "tokenizer"

_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _train_spm(texts: Sequence[str]) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=TINY_SPM_VOCAB,
        hard_vocab_limit=False,
        model_type="bpe",  # deterministic merges
        character_coverage=1.0,
        byte_fallback=True,
        num_threads=1,
        unk_id=0,
        bos_id=1,  # the release's BOS
        eos_id=2,  # the release's EOS (= PAD)
        pad_id=-1,
        minloglevel=2,
    )
    return model.getvalue()


def _bert_vocab(texts: Sequence[str]) -> list[str]:
    """[PAD] [UNK] [CLS] [SEP] [MASK], single characters and their ##-continuations (so any ASCII
    word can be spelled), then whole words of `texts` by first appearance, up to TINY_BERT_VOCAB."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = list(_BERT_SPECIALS) + list(chars) + ["##" + c for c in string.ascii_lowercase + string.digits]
    seen = set(vocab)
    for text in texts:
        for word in text.lower().replace(",", " ").replace(".", " ").split():
            if word not in seen and len(vocab) < TINY_BERT_VOCAB:
                vocab.append(word)
                seen.add(word)
    return vocab


def build_tiny_tokenizers(out_dir: str | os.PathLike, texts: Sequence[str] | None = None) -> tuple[str, str]:
    """Trains a tiny sentencepiece model and writes a tiny BERT tokenizer folder under `out_dir`.

    Returns (path of the `.model` file for `StepTokenizer`, folder with `vocab.txt` for `ClipTokenizer`).
    """
    texts = list(DEFAULT_TEXTS if texts is None else texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("texts must be a non-empty list of non-blank strings")
    out_dir = os.fspath(out_dir)
    clip_dir = os.path.join(out_dir, CLIP_TOKENIZER_DIR)
    os.makedirs(clip_dir, exist_ok=True)
    spm_path = os.path.join(out_dir, SPM_FILE)
    _write_atomic(spm_path, _train_spm(texts))
    _write_atomic(os.path.join(clip_dir, "vocab.txt"), ("\n".join(_bert_vocab(texts)) + "\n").encode())
    return spm_path, clip_dir


def tiny_step_llm_config(**overrides) -> StepLLMConfig:
    """A 2-layer Step-LLM (64 wide, 4 heads in 2 KV groups) whose vocab covers the tiny tokenizer."""
    fields = dict(
        hidden_size=64, num_heads=4, num_groups=2, ffn_hidden_size=256, num_layers=2, vocab_size=512, max_length=320
    )
    fields.update(overrides)
    return StepLLMConfig(**fields)


def tiny_clip_config(**overrides) -> ClipConfig:
    """A 2-layer BERT (32 wide, 4 heads) whose vocab covers the tiny BERT vocab."""
    fields = dict(
        vocab_size=TINY_BERT_VOCAB,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        max_length=77,
    )
    fields.update(overrides)
    return ClipConfig(**fields)


_OUT_PROJECTIONS = ("attention.wo.kernel", "attention.output.kernel")


def random_text_encoder(make_model: Callable[[], nnx.Module], seed: int = 0) -> nnx.Module:
    """Random weights drawn in NumPy (no per-op XLA compiles, so building takes milliseconds):
    kernels N(0, 1/fan_in), embeddings N(0, 0.02^2), norm scales 1, biases 0. Deterministic in `seed`."""
    abstract = nnx.eval_shape(make_model)
    rng = np.random.default_rng(seed)
    arrays = {}
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        name = ".".join(map(str, path))
        value = var.get_value()
        shape, dtype = tuple(value.shape), value.dtype
        stacked = name.startswith("layers.")
        inner = shape[1:] if stacked else shape
        if name.endswith("bias"):
            a = np.zeros(shape)
        elif "norm" in name.rsplit(".", 1)[-1]:
            a = np.ones(shape)
        elif name.endswith("embedding"):
            a = rng.normal(0.0, 0.02, shape)
        else:
            fan_in = int(np.prod(inner[:-1])) if name.endswith(_OUT_PROJECTIONS) else inner[0]
            a = rng.normal(0.0, fan_in**-0.5, shape)
        arrays[name] = a.astype(dtype)
    return build_model(make_model, arrays)


def build_tiny_prompt_encoder(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    step_llm_config: StepLLMConfig | None = None,
    clip_config: ClipConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """A `PromptEncoder` over randomly initialised tiny encoders and tokenizers written to `out_dir`."""
    from stepvideo_jax.text.prompt import PromptEncoder
    from stepvideo_jax.text.tokenizers import ClipTokenizer, StepTokenizer

    llm_cfg = step_llm_config or tiny_step_llm_config()
    clip_cfg = clip_config or tiny_clip_config()
    spm_path, clip_dir = build_tiny_tokenizers(out_dir)
    step_tok = StepTokenizer(spm_path, max_length=llm_cfg.max_length)
    clip_tok = ClipTokenizer(clip_dir, max_length=clip_cfg.max_length)
    if step_tok.vocab_size > llm_cfg.vocab_size or clip_tok.vocab_size > clip_cfg.vocab_size:
        raise ValueError(
            f"tiny vocab sizes (step {step_tok.vocab_size}, clip {clip_tok.vocab_size}) exceed the configs' "
            f"({llm_cfg.vocab_size}, {clip_cfg.vocab_size})"
        )
    llm = random_text_encoder(lambda: StepLLM(llm_cfg, rngs=nnx.Rngs(0)), seed)
    clip = random_text_encoder(lambda: HunyuanCLIP(clip_cfg, rngs=nnx.Rngs(0)), seed + 1)
    return PromptEncoder(llm, step_tok, clip, clip_tok, cache_dir=cache_dir)
