"""Classifier-free-guided Euler sampling of the DiT.

The sampler stays outside the model: it calls ``StepVideoDiT.forward`` (channels-last) on one batch of
[conditional rows | unconditional rows], combines the two halves with the guidance scale and takes an
Euler step. The whole step is one jitted function of (model state, latents, sigma pair, ...); the
loop runs it on the host with a progress bar, or, with ``fused=True``, runs every step inside one
compiled program (``lax.fori_loop``), which is what benchmarks compare the host loop against.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from stepvideo_jax.diffusion.flow_match import euler_step

__all__ = ["TextConditioning", "guided_velocity", "denoise_step", "Sampler"]


class TextConditioning(NamedTuple):
    """Text inputs of the DiT for one CFG batch: B conditional rows, then B unconditional rows."""

    llm_states: jax.Array  # [2B, L_llm, C_llm]
    mask: jax.Array  # [2B, L_clip + L_llm]
    clip_states: jax.Array | None = None  # [2B, L_clip, C_clip]


def guided_velocity(model, latents, sigma, text: TextConditioning, condition, motion_score, guidance_scale):
    """v_u + g * (v_c - v_u) for latents [B, F, H, W, C] (channels-last); returns [B, F, H, W, C].

    As released, the timestep is sigma cast to the model's compute dtype, and the guidance combination
    is computed in the model's output dtype (the Euler step upcasts afterwards).
    """
    b = latents.shape[0]
    dtype = model.cfg.jnp_dtype
    x = jnp.concatenate([latents, latents], axis=0).astype(dtype)  # [2B, F, H, W, C]
    t = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (2 * b,)).astype(dtype)  # [2B]
    cond = None if condition is None else jnp.concatenate([condition, condition], axis=0).astype(dtype)
    v = model.forward(x, t, text.llm_states, text.mask, text.clip_states, cond, motion_score)  # [2B, F, H, W, C]
    v_cond, v_uncond = v[:b], v[b:]
    g = jnp.asarray(guidance_scale, jnp.float32).astype(v.dtype)
    return v_uncond + g * (v_cond - v_uncond)


def denoise_step(model, latents, sigma, sigma_next, text, condition, motion_score, guidance_scale):
    """One guided Euler step: float32 latents [B, F, H, W, C] at sigma -> latents at sigma_next."""
    v = guided_velocity(model, latents, sigma, text, condition, motion_score, guidance_scale)
    return euler_step(latents, v, sigma, sigma_next)


def _check_text(text: TextConditioning, batch: int) -> None:
    if not isinstance(text, TextConditioning):
        raise ValueError(f"text must be a TextConditioning(llm_states, mask, clip_states); got {type(text).__name__}")
    for name in ("llm_states", "mask", "clip_states"):
        a = getattr(text, name)
        if a is not None and a.shape[0] != 2 * batch:
            raise ValueError(
                f"text.{name} must have 2*batch = {2 * batch} rows ([conditional | unconditional]); got shape {tuple(a.shape)}"
            )


class Sampler:
    """Jitted CFG Euler sampling of a `StepVideoDiT` (any module with `.cfg` and channels-last `.forward`)."""

    def __init__(self, model: nnx.Module):
        self._graphdef, self._state = nnx.split(model)
        graphdef = self._graphdef

        def step(state, latents, sigma, sigma_next, text, condition, motion_score, guidance_scale):
            m = nnx.merge(graphdef, state)
            return denoise_step(m, latents, sigma, sigma_next, text, condition, motion_score, guidance_scale)

        def loop(state, latents, sigmas, text, condition, motion_score, guidance_scale):
            leaves, treedef = jax.tree.flatten(state)

            def body(i, x):
                # NNX variables do not cross trace levels: rebuild fresh ones from the arrays in the body.
                m = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
                return denoise_step(m, x, sigmas[i], sigmas[i + 1], text, condition, motion_score, guidance_scale)

            return jax.lax.fori_loop(0, sigmas.shape[0] - 1, body, latents.astype(jnp.float32))

        self.step_fn = jax.jit(step)
        self.loop_fn = jax.jit(loop)
        self.step_seconds: list[float] = []  # wall time of each step of the last host loop (dispatch -> ready)

    @property
    def state(self):
        return self._state

    def sample(
        self,
        latents: jax.Array,  # [B, F, H, W, C] initial noise (sigma = 0)
        sigmas,  # [N+1] from `flow_sigmas`
        text: TextConditioning,
        condition: jax.Array | None = None,  # [B, F, H, W, C] (TI2V)
        motion_score: float | None = None,
        guidance_scale: float = 9.0,
        *,
        fused: bool = False,
        progress: bool = True,
    ) -> jax.Array:
        """Runs the N steps; returns float32 latents [B, F, H, W, C] at sigma = sigmas[-1]."""
        sigmas = np.asarray(sigmas, np.float32)
        if sigmas.ndim != 1 or sigmas.shape[0] < 2:
            raise ValueError(f"sigmas must be a 1-D array of N+1 >= 2 values; got shape {sigmas.shape}")
        if latents.ndim != 5:
            raise ValueError(f"latents must be (batch, frames, height, width, channels); got {tuple(latents.shape)}")
        _check_text(text, latents.shape[0])
        if not math.isfinite(float(guidance_scale)):
            raise ValueError(f"guidance_scale must be finite; got {guidance_scale!r}")
        g = jnp.asarray(guidance_scale, jnp.float32)
        ms = None if motion_score is None else jnp.asarray(motion_score, jnp.float32)
        x = jnp.asarray(latents, jnp.float32)
        if fused:
            return self.loop_fn(self._state, x, jnp.asarray(sigmas), text, condition, ms, g)
        n = sigmas.shape[0] - 1
        self.step_seconds = []
        # Step i+1 is dispatched before waiting for step i, so the host's work for the next step
        # (Python, argument handling, dispatch) overlaps the device's work on the current one; the
        # bar still advances on completed steps, so its steps/s is the real rate.
        with tqdm(total=n, unit="step", desc="denoising", disable=not progress, leave=False) as bar:
            in_flight = None
            t_last = time.perf_counter()
            for i in range(n + 1):
                if i < n:
                    # Passing sigmas as host scalars keeps one compiled program for every step.
                    x = self.step_fn(self._state, x, sigmas[i], sigmas[i + 1], text, condition, ms, g)
                if in_flight is not None:
                    in_flight.block_until_ready()
                    now = time.perf_counter()
                    self.step_seconds.append(now - t_last)
                    t_last = now
                    bar.update()
                in_flight = x if i < n else None
        return x
