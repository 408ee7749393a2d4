"""Classifier-free-guided Euler sampling of the DiT.

The sampler stays outside the model: it calls ``StepVideoDiT.forward`` (channels-last) on one batch of
[conditional rows | unconditional rows], combines the two halves with the guidance scale and takes an
Euler step. The whole step is one jitted function of (model state, latents, sigma pair, ...); the
loop runs it on the host with a progress bar, or, with ``fused=True``, runs every step inside one
compiled program (``lax.fori_loop``), which is what benchmarks compare the host loop against.

Two options cut the DiT evaluations (the sampler owns them; the model's call signature knows
nothing of them): step caching (``cache=CacheSettings(...)``, see `stepvideo_jax.diffusion.cache`)
and a guidance interval (classifier-free guidance only on the steps i with lo <= i/N < hi; the other
steps evaluate only the B conditional rows and take their velocity). With neither, the sampler runs
its original program. ``Sampler.dit_evals`` counts batch rows x steps computed by the full block stack.
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

from stepvideo_jax.diffusion.cache import (
    CacheSettings,
    cached_denoise_step,
    check_guidance_interval,
    guidance_steps,
    init_cache_state,
    residual_magnitude_ratio,
    static_skip_schedule,
)
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
        self._model_cfg = model.cfg
        graphdef, model_cfg = self._graphdef, model.cfg

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

        def cached_step(
            state,
            latents,
            sigma,
            sigma_next,
            text,
            condition,
            motion_score,
            guidance_scale,
            cache,
            may_skip,
            *,
            policy,
            use_cfg,
            threshold,
            max_skips,
        ):
            m = nnx.merge(graphdef, state)
            return cached_denoise_step(
                m,
                latents,
                sigma,
                sigma_next,
                text,
                condition,
                motion_score,
                guidance_scale,
                cache,
                may_skip,
                policy=policy,
                use_cfg=use_cfg,
                threshold=threshold,
                max_skips=max_skips,
            )

        def cached_loop(
            state,
            latents,
            sigmas,
            text,
            condition,
            motion_score,
            guidance_scale,
            may_skip,
            *,
            segments,
            policy,
            threshold,
            max_skips,
        ):
            leaves, treedef = jax.tree.flatten(state)
            x = latents.astype(jnp.float32)
            cache = init_cache_state(model_cfg, x)
            for start, stop, use_cfg in segments:  # runs of steps with the same batch rows

                def body(i, carry, use_cfg=use_cfg):
                    m = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
                    x, cache = carry
                    return cached_denoise_step(
                        m,
                        x,
                        sigmas[i],
                        sigmas[i + 1],
                        text,
                        condition,
                        motion_score,
                        guidance_scale,
                        cache,
                        may_skip[i],
                        policy=policy,
                        use_cfg=use_cfg,
                        threshold=threshold,
                        max_skips=max_skips,
                    )

                x, cache = jax.lax.fori_loop(start, stop, body, (x, cache))
            return x, cache.evals

        def calibration_step(
            state, latents, sigma, sigma_next, text, condition, motion_score, guidance_scale, previous
        ):
            m = nnx.merge(graphdef, state)
            x, cache = cached_denoise_step(
                m,
                latents,
                sigma,
                sigma_next,
                text,
                condition,
                motion_score,
                guidance_scale,
                init_cache_state(m.cfg, latents),
                False,
                policy="none",
                use_cfg=True,
                threshold=0.0,
                max_skips=1,
            )
            return x, cache.residual, residual_magnitude_ratio(cache.residual, previous)

        self.step_fn = jax.jit(step)
        self.loop_fn = jax.jit(loop)
        self.cached_step_fn = jax.jit(
            cached_step, static_argnames=("may_skip", "policy", "use_cfg", "threshold", "max_skips")
        )
        self.cached_loop_fn = jax.jit(cached_loop, static_argnames=("segments", "policy", "threshold", "max_skips"))
        self.calibration_step_fn = jax.jit(calibration_step)
        self.step_seconds: list[float] = []  # wall time of each step of the last host loop (dispatch -> ready)
        self.dit_evals = 0  # batch rows x steps computed by the full block stack in the last run
        self.computed_steps: list[bool] | None = None  # per step of the last host loop: blocks run (not reused)

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
        cache: CacheSettings | None = None,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
    ) -> jax.Array:
        """Runs the N steps; returns float32 latents [B, F, H, W, C] at sigma = sigmas[-1].

        `cache`: step caching (None = policy none); `guidance_interval`: (lo, hi) step fractions
        where CFG applies (the default (0, 1) = every step)."""
        sigmas = np.asarray(sigmas, np.float32)
        if sigmas.ndim != 1 or sigmas.shape[0] < 2:
            raise ValueError(f"sigmas must be a 1-D array of N+1 >= 2 values; got shape {sigmas.shape}")
        if latents.ndim != 5:
            raise ValueError(f"latents must be (batch, frames, height, width, channels); got {tuple(latents.shape)}")
        _check_text(text, latents.shape[0])
        if not math.isfinite(float(guidance_scale)):
            raise ValueError(f"guidance_scale must be finite; got {guidance_scale!r}")
        cache = (cache or CacheSettings()).resolved()
        lo, hi = check_guidance_interval(guidance_interval)
        g = jnp.asarray(guidance_scale, jnp.float32)
        ms = None if motion_score is None else jnp.asarray(motion_score, jnp.float32)
        x = jnp.asarray(latents, jnp.float32)
        n = sigmas.shape[0] - 1
        use_cfg = guidance_steps(n, (lo, hi))
        b = latents.shape[0]
        if cache.policy == "none" and use_cfg.all():  # the original program
            self.dit_evals, self.computed_steps = 2 * b * n, [True] * n
            if fused:
                return self.loop_fn(self._state, x, jnp.asarray(sigmas), text, condition, ms, g)
            return self._host_loop(
                n,
                progress,
                lambda i, x: self.step_fn(self._state, x, sigmas[i], sigmas[i + 1], text, condition, ms, g),
                x,
            )

        if cache.policy == "static":
            may_skip = static_skip_schedule(cache, n)
        else:
            may_skip = np.arange(n) >= max(cache.warmup_steps(n), 1)
        static = dict(
            policy=cache.policy,
            max_skips=int(cache.max_skips),
            threshold=float(cache.first_block_threshold) if cache.policy == "first_block" else 0.0,
        )
        if fused:
            bounds = [0] + [i for i in range(1, n) if use_cfg[i] != use_cfg[i - 1]] + [n]
            segments = tuple((s0, s1, bool(use_cfg[s0])) for s0, s1 in zip(bounds, bounds[1:]))
            x, evals = self.cached_loop_fn(
                self._state,
                x,
                jnp.asarray(sigmas),
                text,
                condition,
                ms,
                g,
                jnp.asarray(may_skip),
                segments=segments,
                **static,
            )
            self.dit_evals, self.computed_steps = int(evals), None
            return x
        state = init_cache_state(self._model_cfg, x)
        evals_after = []
        valid = [False, False]  # host copy of state.valid for the static policy's host-side decisions

        def step(i, x):
            nonlocal state
            skip = bool(may_skip[i])
            if cache.policy == "static":  # decided here: one of two compiled programs, no lax.cond
                skip = skip and valid[0] and (valid[1] or not use_cfg[i])
                if not skip:
                    valid[:] = [True, bool(use_cfg[i])]
            x, state = self.cached_step_fn(
                self._state,
                x,
                sigmas[i],
                sigmas[i + 1],
                text,
                condition,
                ms,
                g,
                state,
                may_skip=skip,
                use_cfg=bool(use_cfg[i]),
                **static,
            )
            evals_after.append(state.evals)
            return x

        x = self._host_loop(n, progress, step, x)
        evals = [0] + [int(e) for e in evals_after]
        self.dit_evals = evals[-1]
        self.computed_steps = [e1 > e0 for e0, e1 in zip(evals, evals[1:])]
        return x

    def _host_loop(self, n: int, progress: bool, step, x):
        """x = step(i, x) for i < n, one step dispatched ahead; records `step_seconds`."""
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
                    x = step(i, x)
                if in_flight is not None:
                    in_flight.block_until_ready()
                    now = time.perf_counter()
                    self.step_seconds.append(now - t_last)
                    t_last = now
                    bar.update()
                in_flight = x if i < n else None
        return x

    def calibrate(
        self, latents, sigmas, text: TextConditioning, condition=None, motion_score=None, guidance_scale: float = 9.0
    ) -> np.ndarray:
        """Runs the uncached sampler and returns float64 [N]: per step, MagCache's magnitude ratio of the
        block stack's residual to the previous step's (mean over rows and tokens; 1 for step 0), the
        `cache.mag_ratios` of the static policy."""
        sigmas = np.asarray(sigmas, np.float32)
        _check_text(text, latents.shape[0])
        g = jnp.asarray(guidance_scale, jnp.float32)
        ms = None if motion_score is None else jnp.asarray(motion_score, jnp.float32)
        x = jnp.asarray(latents, jnp.float32)
        previous = init_cache_state(self._model_cfg, x).residual
        ratios = []
        for i in range(sigmas.shape[0] - 1):
            x, residual, ratio = self.calibration_step_fn(
                self._state, x, sigmas[i], sigmas[i + 1], text, condition, ms, g, previous
            )
            ratios.append(ratio if i else jnp.ones(()))
            previous = residual
        return np.asarray([float(r) for r in ratios], np.float64)
