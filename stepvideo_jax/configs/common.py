"""Pieces the packaged configs share: the training config's sections with their default values.

Each function returns a fresh ConfigDict; keyword arguments replace defaults (an unknown key is an
error, so a typo cannot add a field).
"""

from __future__ import annotations

from ml_collections import config_dict

__all__ = ["objective", "optim", "data", "train", "checkpoint", "lora", "train_config"]


def _section(defaults: dict, overrides: dict) -> config_dict.ConfigDict:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown config fields {unknown}; expected some of {sorted(defaults)}")
    return config_dict.ConfigDict({**defaults, **overrides})


def objective(**overrides) -> config_dict.ConfigDict:
    """ObjectiveConfig fields (flow matching with noise-augmented first-frame conditioning)."""
    return _section(
        dict(
            timestep_sampling="logit_normal",
            logit_mean=0.0,
            logit_std=1.0,
            time_shift=1.0,
            caption_dropout=0.1,
            cond_noise="lognormal",
            cond_noise_min=0.0,
            cond_noise_max=0.1,
            cond_noise_mean=-3.0,
            cond_noise_std=0.5,
        ),
        overrides,
    )


def optim(**overrides) -> config_dict.ConfigDict:
    """OptimConfig fields (AdamW, warmup + schedule, clipping, optional EMA)."""
    return _section(
        dict(
            learning_rate=1e-5,
            warmup_steps=500,
            schedule="cosine",
            total_steps=20_000,
            end_lr_factor=0.1,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=0.0,
            grad_clip=1.0,
            ema_decay=0.9999,
            # parameter path prefixes that stay fixed, e.g. ("encoder",): a decoder-only VAE run
            frozen=(),
        ),
        overrides,
    )


def data(**overrides) -> config_dict.ConfigDict:
    """DataConfig fields (+ null_prompt: the precompute folder's null_prompt.npz by default, or for
    kind="video" the prompt whose states replace dropped captions)."""
    return _section(
        dict(
            manifest="data/latents/index.jsonl",
            kind="latents",
            batch_size=1,
            num_frames=102 // 17 * 17,
            frame_stride=1,
            buckets=((544, 992), (992, 544), (768, 768)),
            default_motion_score=5.0,
            seed=0,
            shuffle=True,
            num_epochs=None,
            null_prompt="",
        ),
        overrides,
    )


def train(**overrides) -> config_dict.ConfigDict:
    return _section(dict(steps=20_000, seed=0, log_every=10, tensorboard=True), overrides)


def checkpoint(**overrides) -> config_dict.ConfigDict:
    return _section(dict(every=500, keep=3, async_save=True), overrides)


def lora(**overrides) -> config_dict.ConfigDict:
    """LoRAConfig fields (+ seed of the adapters' A initialisation); rank 0 = no LoRA (full training)."""
    from stepvideo_jax.lora import DEFAULT_TARGETS

    return _section(dict(rank=16, alpha=16.0, targets=DEFAULT_TARGETS, dropout=0.0, seed=0), overrides)


def train_config(network: str, model: dict, **sections) -> config_dict.ConfigDict:
    """A whole training config for `network` ("dit" or "vae"): `model` holds the network config's
    fields; `sections` may give ready ConfigDicts for objective, optim, data, train, checkpoint, and
    `mesh`, `workdir`."""
    c = config_dict.ConfigDict()
    c.network = network  # which network train.py trains: "dit" (flow matching) or "vae" (reconstruction)
    c.model = config_dict.ConfigDict(dict(model))
    c.objective = sections.pop("objective", None) or objective()
    c.optim = sections.pop("optim", None) or optim()
    c.data = sections.pop("data", None) or data()
    c.mesh = sections.pop("mesh", "fsdp=-1")  # MeshConfig.parse syntax, e.g. "data=2,fsdp=-1,tensor=4"
    c.train = sections.pop("train", None) or train()
    c.checkpoint = sections.pop("checkpoint", None) or checkpoint()
    # "random"; "converted": a converted TI2V checkpoint folder; "t2v": a converted T2V folder, widened.
    c.init = config_dict.ConfigDict(dict(kind="random", checkpoint=""))
    # Converted checkpoint folder with the VAE and text encoders, for data.kind="video".
    c.online = config_dict.ConfigDict(dict(checkpoint=""))
    if "workdir" in sections:
        c.workdir = sections.pop("workdir")
    if sections:
        raise ValueError(f"unknown training config sections {sorted(sections)}")
    return c
