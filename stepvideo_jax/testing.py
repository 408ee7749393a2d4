"""Random and tiny models for tests, benchmarks and the sampler's `tiny` config: one initialisation
rule (`random_model`), tiny tokenizers (a sentencepiece model trained on a few lines, a small BERT
vocab), tiny configs, and the tiny pipeline's components.

Everything here is deterministic (same inputs -> byte-identical files, same seed -> same weights)
and fast (well under a second): weights are drawn on the host with NumPy, where running the
initialisers op by op (or compiling them) takes tens of seconds on a CPU.
"""

from __future__ import annotations

import io
import os
import string
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepvideo_jax.files import write_bytes_atomic
from stepvideo_jax.text.clip import ClipConfig, HunyuanCLIP
from stepvideo_jax.text.prompt import PromptEncoder
from stepvideo_jax.text.step_llm import StepLLM, StepLLMConfig
from stepvideo_jax.text.tokenizers import ClipTokenizer, StepTokenizer

__all__ = [
    "DEFAULT_TEXTS",
    "TINY_SPM_VOCAB",
    "TINY_BERT_VOCAB",
    "build_tiny_tokenizers",
    "tiny_step_llm_config",
    "tiny_dit_config",
    "tiny_clip_config",
    "build_tiny_prompt_encoder",
    "random_model",
    "tiny_prompt_encoder",
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
    write_bytes_atomic(spm_path, _train_spm(texts))
    write_bytes_atomic(os.path.join(clip_dir, "vocab.txt"), ("\n".join(_bert_vocab(texts)) + "\n").encode())
    return spm_path, clip_dir


def tiny_step_llm_config(**overrides) -> StepLLMConfig:
    """A 2-layer Step-LLM (64 wide, 4 heads in 2 KV groups) whose vocab covers the tiny tokenizer."""
    fields = dict(
        hidden_size=64, num_heads=4, num_groups=2, ffn_hidden_size=256, num_layers=2, vocab_size=512, max_length=320
    )
    fields.update(overrides)
    return StepLLMConfig(**fields)


def tiny_dit_config(**overrides):
    """A 2-layer TI2V DiT (4 heads x 32, 8 latent channels, captions 16 / 12 wide), float32, `xla` attention."""
    from stepvideo_jax.dit import DiTConfig

    fields = dict(
        num_heads=4, head_dim=32, in_channels=8, out_channels=8, num_layers=2, caption_channels=(16, 12),
        rope_split=(16, 8, 8), use_additional_conditions=True, param_dtype="float32", dtype="float32",
        attention_kernel="xla",
    )  # fmt: skip
    fields.update(overrides)
    return DiTConfig(**fields)


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


# Output projections: their kernels are (heads, head_dim, out), so every axis but the last is fan-in.
_OUT_PROJECTIONS = ("wo", "output")


def random_model(make_model: Callable[[], nnx.Module], seed: int = 0) -> nnx.Module:
    """`make_model()` with random parameters drawn on the host with NumPy, by name: biases 0, norm
    scales 1, embeddings N(0, 0.02^2), kernels N(0, 1/fan_in). The fan-in of a kernel is every axis
    but the last (dense and conv kernels), except for 3-axis projections (in, heads, head_dim), whose
    fan-in is the first axis; the stacked-layers axis never counts. Deterministic in `seed`."""
    graphdef, state = nnx.split(nnx.eval_shape(make_model))
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(state):
        if not isinstance(var, nnx.Param):
            raise ValueError(f"random model has non-parameter state at {'.'.join(map(str, path))}")
        name, shape, dtype = str(path[-1]), tuple(var.shape), var.dtype
        if "bias" in name:
            value = np.zeros(shape, np.float32)
        elif "norm" in name or name == "scale" or name.endswith("_scale"):
            value = np.ones(shape, np.float32)
        elif name == "embedding":
            value = rng.normal(0.0, 0.02, shape)
        else:
            axes = var.get_metadata().get("out_sharding") or (None,) * len(shape)
            dims = [d for d, a in zip(shape, axes) if a != "layers"]
            module = str(path[-2]) if len(path) > 1 else ""
            if len(dims) == 3 and module not in _OUT_PROJECTIONS:
                fan_in = dims[0]
            else:
                fan_in = int(np.prod(dims[:-1])) if len(dims) > 1 else dims[-1]
            value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
        var.set_value(jnp.asarray(value, dtype))
    return nnx.merge(graphdef, state)


def tiny_prompt_encoder(
    tokenizer_dir: str | os.PathLike,
    *,
    seed: int = 0,
    step_llm_config: StepLLMConfig | None = None,
    clip_config: ClipConfig | None = None,
    texts: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    fingerprint: str | None = None,
) -> PromptEncoder:
    """A `PromptEncoder` over random tiny encoders (`random_model`, seeds `seed` and `seed + 1`) and
    tiny tokenizers trained on `texts` and written to `tokenizer_dir`."""
    llm_cfg = step_llm_config or tiny_step_llm_config()
    clip_cfg = clip_config or tiny_clip_config()
    spm_path, clip_dir = build_tiny_tokenizers(tokenizer_dir, texts)
    step_tok = StepTokenizer(spm_path, max_length=llm_cfg.max_length)
    clip_tok = ClipTokenizer(clip_dir, max_length=clip_cfg.max_length)
    if step_tok.vocab_size > llm_cfg.vocab_size or clip_tok.vocab_size > clip_cfg.vocab_size:
        raise ValueError(
            f"tiny vocab sizes (step {step_tok.vocab_size}, clip {clip_tok.vocab_size}) exceed the configs' "
            f"({llm_cfg.vocab_size}, {clip_cfg.vocab_size})"
        )
    llm = random_model(lambda: StepLLM(llm_cfg, rngs=nnx.Rngs(0)), seed)
    clip = random_model(lambda: HunyuanCLIP(clip_cfg, rngs=nnx.Rngs(0)), seed + 1)
    return PromptEncoder(llm, step_tok, clip, clip_tok, cache_dir=cache_dir, fingerprint=fingerprint)


def build_tiny_prompt_encoder(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    step_llm_config: StepLLMConfig | None = None,
    clip_config: ClipConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> PromptEncoder:
    """`tiny_prompt_encoder` with the default tiny tokenizer texts (kept for existing callers)."""
    return tiny_prompt_encoder(
        out_dir, seed=seed, step_llm_config=step_llm_config, clip_config=clip_config, cache_dir=cache_dir
    )


def tiny_pipeline_components(config):
    """(dit, vae, prompt_encoder) of random-weight tiny models for a sampling config's `tiny` section
    (the `ti2v:tiny` / `t2v:tiny` configs); tokenizers are built into `config.tokenizer_cache_dir`."""
    from stepvideo_jax.dit import DiTConfig, StepVideoDiT
    from stepvideo_jax.vae import VAEConfig, VideoVAE

    t = config.tiny
    seed = int(t.seed)
    pdt = config.param_dtype or "float32"
    llm_cfg = tiny_step_llm_config(param_dtype=pdt, dtype=config.text_dtype)
    clip_cfg = tiny_clip_config(param_dtype=pdt, dtype=config.text_dtype)
    encoder = tiny_prompt_encoder(
        _tiny_cache_dir(config.tokenizer_cache_dir),
        seed=seed,
        step_llm_config=llm_cfg,
        clip_config=clip_cfg,
        fingerprint=f"tiny-random-seed{seed}",
    )
    vae_cfg = VAEConfig.tiny(
        z_channels=t.z_channels,
        encoder_ch=t.vae_width,
        decoder_ch=t.vae_width,
        norm_groups=t.vae_norm_groups,
        param_dtype=pdt,
        dtype=config.vae_dtype,
    )
    vae = random_model(lambda: VideoVAE(vae_cfg, rngs=nnx.Rngs(0)), seed + 2)
    frame_ch = t.dit_head_dim // 4 * 2  # RoPE channels: half (rounded to even) on frames, the rest on height/width
    hw_ch = (t.dit_head_dim - frame_ch) // 2
    dit_cfg = DiTConfig(
        num_heads=t.dit_heads,
        head_dim=t.dit_head_dim,
        in_channels=t.z_channels,
        out_channels=t.z_channels,
        num_layers=t.dit_layers,
        use_additional_conditions=bool(config.use_additional_conditions),
        caption_channels=(llm_cfg.hidden_size, clip_cfg.hidden_size),
        rope_split=(frame_ch, hw_ch, hw_ch),
        param_dtype=pdt,
        dtype=config.dit_dtype,
        attention_kernel=config.attention_kernel,
    )
    dit = random_model(lambda: StepVideoDiT(dit_cfg, rngs=nnx.Rngs(0)), seed + 3)
    return dit, vae, encoder


def _tiny_cache_dir(configured: str) -> str:
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stepvideo_jax", "tiny_tokenizers")
