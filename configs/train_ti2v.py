"""Training configuration for Step-Video-TI2V (``python train.py --config configs/train_ti2v.py:tiny``).

``get_config(arg)``: ``"full"`` (default) is the released 30B TI2V model trained from precomputed
latents; ``"tiny"`` is a 2-layer, 64-wide model with 8 latent channels for CPU runs and tests.
"""

import ml_collections


def get_config(arg: str = "full") -> ml_collections.ConfigDict:
    variant = arg or "full"
    if variant not in ("full", "tiny"):
        raise ValueError(f"unknown train config variant {variant!r}; expected 'full' or 'tiny'")
    c = ml_collections.ConfigDict()

    # DiTConfig fields (bf16 compute on float32 master weights).
    c.model = ml_collections.ConfigDict(dict(
        num_heads=48, head_dim=128, in_channels=64, out_channels=64, num_layers=48,
        caption_channels=(6144, 1024), rope_split=(64, 32, 32), use_additional_conditions=True,
        param_dtype="float32", dtype="bfloat16", remat_policy="full", scan_layers=True, attention_kernel="auto",
    ))
    # ObjectiveConfig fields.
    c.objective = ml_collections.ConfigDict(dict(
        timestep_sampling="logit_normal", logit_mean=0.0, logit_std=1.0, time_shift=1.0,
        caption_dropout=0.1, cond_noise="lognormal", cond_noise_min=0.0, cond_noise_max=0.1,
        cond_noise_mean=-3.0, cond_noise_std=0.5,
    ))
    # OptimConfig fields.
    c.optim = ml_collections.ConfigDict(dict(
        learning_rate=1e-5, warmup_steps=500, schedule="cosine", total_steps=20_000, end_lr_factor=0.1,
        b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=1.0, ema_decay=0.9999,
    ))
    # DataConfig fields (+ null_prompt: the precompute folder's null_prompt.npz by default, or for
    # kind="video" the prompt whose states replace dropped captions).
    c.data = ml_collections.ConfigDict(dict(
        manifest="data/latents/index.jsonl", kind="latents", batch_size=1, num_frames=102 // 17 * 17,
        frame_stride=1, buckets=((544, 992), (992, 544), (768, 768)), default_motion_score=5.0, seed=0,
        shuffle=True, num_epochs=None, null_prompt="",
    ))
    c.mesh = "fsdp=-1"  # MeshConfig.parse syntax, e.g. "data=2,fsdp=-1,tensor=4"
    c.train = ml_collections.ConfigDict(dict(steps=20_000, seed=0, log_every=10, tensorboard=True))
    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, async_save=True))
    # "random"; "converted": a converted TI2V checkpoint folder; "t2v": a converted T2V folder, widened.
    c.init = ml_collections.ConfigDict(dict(kind="random", checkpoint=""))
    # Converted checkpoint folder with the VAE and text encoders, for data.kind="video".
    c.online = ml_collections.ConfigDict(dict(checkpoint=""))

    if variant == "tiny":
        c.model.update(num_heads=2, head_dim=32, in_channels=8, out_channels=8, num_layers=2,
                       caption_channels=(16, 12), rope_split=(16, 8, 8), dtype="float32", remat_policy="none",
                       attention_kernel="xla")
        c.optim.update(learning_rate=1e-3, warmup_steps=10, total_steps=1000, ema_decay=0.0)
        c.objective.update(caption_dropout=0.1)
        c.data.update(batch_size=2, num_frames=17, buckets=((32, 32), (32, 48)))
        c.train.update(steps=300, log_every=50)
        c.checkpoint.update(every=50, keep=2)
    return c
