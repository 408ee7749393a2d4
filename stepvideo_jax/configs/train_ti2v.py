"""Training configuration for Step-Video-TI2V (``python train.py --config=train_ti2v:tiny``).

``get_config(arg)``: ``"full"`` (default) is the released 30B TI2V model trained from precomputed
latents; ``"tiny"`` is a 2-layer, 64-wide model with 8 latent channels for CPU runs and tests;
``"lora"`` trains rank-16 adapters on a converted 30B checkpoint (``--config.init.checkpoint=DIR``,
bf16 base frozen, float32 adapters); ``"tiny_lora"`` the same on the tiny model (random base).
"""

import ml_collections

from stepvideo_jax.configs import common

# DiTConfig fields (bf16 compute on float32 master weights).
FULL_MODEL = dict(
    num_heads=48,
    head_dim=128,
    in_channels=64,
    out_channels=64,
    num_layers=48,
    caption_channels=(6144, 1024),
    rope_split=(64, 32, 32),
    use_additional_conditions=True,
    param_dtype="float32",
    dtype="bfloat16",
    remat_policy="full",
    scan_layers=True,
    attention_kernel="auto",
)


def get_config(arg: str = "full") -> ml_collections.ConfigDict:
    variant = arg or "full"
    if variant not in ("full", "tiny", "lora", "tiny_lora"):
        raise ValueError(f"unknown train config variant {variant!r}; expected 'full', 'tiny', 'lora' or 'tiny_lora'")
    c = common.train_config("dit", FULL_MODEL)
    if variant in ("lora", "tiny_lora"):
        c.lora = common.lora()
        c.model.update(param_dtype="bfloat16")  # the frozen base as converted; adapters are float32
        c.optim.update(learning_rate=1e-4, warmup_steps=100, total_steps=5_000, ema_decay=0.0)
        c.init.update(kind="converted", checkpoint="checkpoints/stepvideo-ti2v")
    if variant in ("tiny", "tiny_lora"):
        c.model.update(
            num_heads=2,
            head_dim=32,
            in_channels=8,
            out_channels=8,
            num_layers=2,
            caption_channels=(16, 12),
            rope_split=(16, 8, 8),
            dtype="float32",
            remat_policy="none",
            attention_kernel="xla",
        )
        c.optim.update(learning_rate=1e-3, warmup_steps=10, total_steps=1000, ema_decay=0.0)
        c.objective.update(caption_dropout=0.1)
        c.data.update(batch_size=2, num_frames=17, buckets=((32, 32), (32, 48)))
        c.train.update(steps=300, log_every=50)
        c.checkpoint.update(every=50, keep=2)
    if variant == "tiny_lora":
        c.model.update(param_dtype="float32")
        c.lora.update(rank=4, alpha=4.0)
        c.init.update(kind="random", checkpoint="")
        c.optim.update(learning_rate=1e-3)
    return c
