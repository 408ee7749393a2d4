"""Initialising a text-image-to-video DiT from a text-to-video one.

The TI2V patch embedding takes [noisy | condition] latents on channels; its kernel rows for the
condition channels start at zero, and the motion embedder's last linear layer (kernel and bias)
starts at zero, so at step 0 the TI2V model with any condition and any motion score computes exactly
what the T2V model computes.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from stepvideo_jax.dit import DiTConfig, StepVideoDiT

__all__ = ["ti2v_config_from_t2v", "widen_t2v_to_ti2v"]


def ti2v_config_from_t2v(cfg: DiTConfig) -> DiTConfig:
    if cfg.use_additional_conditions:
        raise ValueError("expected a text-to-video config (use_additional_conditions=False)")
    return dataclasses.replace(cfg, use_additional_conditions=True)


def widen_t2v_to_ti2v(t2v: StepVideoDiT, *, seed: int = 0, cfg: DiTConfig | None = None) -> StepVideoDiT:
    """A TI2V model holding the T2V model's weights, widened as the module docstring says."""
    cfg = ti2v_config_from_t2v(t2v.cfg) if cfg is None else cfg
    if dataclasses.replace(cfg, use_additional_conditions=False) != t2v.cfg:
        raise ValueError(f"TI2V config {cfg} differs from the T2V config {t2v.cfg} beyond use_additional_conditions")
    ti2v = StepVideoDiT(cfg, rngs=nnx.Rngs(seed))
    src = nnx.to_pure_dict(nnx.state(t2v, nnx.Param))
    dst = nnx.to_pure_dict(nnx.state(ti2v, nnx.Param))
    missing = sorted(set(src) - set(dst))
    if missing:
        raise ValueError(f"T2V parameters {missing} have no place in the TI2V model")
    for name, value in src.items():
        if name != "patch_embed":
            dst[name] = value
    p, c = cfg.patch_size, cfg.in_channels
    kernel = src["patch_embed"]["kernel"]  # [p*p*C, D], rows in (p, p, C) order
    kernel = kernel.reshape(p, p, c, -1)
    widened = jnp.concatenate([kernel, jnp.zeros_like(kernel)], axis=2)  # [p, p, 2C, D]: [noisy | condition]
    dst["patch_embed"] = {"kernel": widened.reshape(p * p * 2 * c, -1), "bias": src["patch_embed"]["bias"]}
    last = dst["motion_embedder"]["linear_2"]
    dst["motion_embedder"]["linear_2"] = {k: jnp.zeros_like(v) for k, v in last.items()}
    state = nnx.state(ti2v, nnx.Param)
    nnx.replace_by_pure_dict(state, dst)
    nnx.update(ti2v, state)
    return ti2v
