"""Step caching for the sampler: reuse the DiT block stack's residual on steps where it barely changes.

A DiT step is embed -> blocks -> final layer; nearly all of the cost is the blocks. Between two
nearby sampling steps the blocks' *residual* (tokens out - tokens in) changes slowly, so on some
steps the sampler adds the residual cached at the last fully computed step instead of running the
blocks (embedding and final layer still run, so the step's own timestep still modulates the output).
The model stays stateless: the sampler calls its split forward (`embed_inputs`, `run_blocks`,
`final_layer`) and carries the cache between steps.

Policies (`CacheSettings.policy`):

- ``none``: every step runs every block (the sampler's original program, bit for bit).
- ``first_block`` (adaptive, First-Block-Cache style): every step runs block 0; if the relative L1
  change of block 0's residual since the last fully computed step, sum|r - r_ref| / sum|r_ref|, is
  below ``first_block_threshold``, blocks 1.. are skipped and their cached residual is added.
  Decided on the device (`lax.cond`), so it works inside `jit` and the fused loop and on a mesh.
- ``static`` (calibrated, MagCache style): a per-step skip schedule fixed before sampling from the
  residual magnitude ratios ``mag_ratios`` measured once by a calibration run
  (`Sampler.calibrate`, `python -m stepvideo_jax.tools.calibrate_cache`) and stored in the config:
  walking the steps, the ratios since the last computed step are multiplied, their distance from 1
  is accumulated, and a step is skipped while that error stays below ``static_threshold`` and at
  most ``max_skips`` steps in a row are skipped. A skip reuses the residual of the whole stack.
- ``auto``: ``static`` when the config carries calibrated ``mag_ratios`` (measured best on the demo
  model, BENCHMARKS.md), else ``first_block``.

Both caching policies always compute the first ``warmup`` fraction of the steps (the early, high
noise steps set the layout) and never reuse across a change of the batch rows (guidance interval).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stepvideo_jax.diffusion.flow_match import euler_step

__all__ = [
    "CACHE_POLICIES",
    "CacheSettings",
    "CacheState",
    "init_cache_state",
    "cached_denoise_step",
    "static_skip_schedule",
    "interpolate_ratios",
    "guidance_steps",
    "check_guidance_interval",
    "residual_magnitude_ratio",
]

CACHE_POLICIES = ("none", "first_block", "static", "auto")


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """The `cache` sub-config, validated (see the module docstring)."""

    policy: str = "none"
    first_block_threshold: float = 0.1  # relative L1 change of block 0's residual below which blocks 1.. are reused
    static_threshold: float = 0.1  # accumulated |1 - magnitude ratio| below which a step reuses the whole stack
    max_skips: int = 2  # at most this many consecutive reused steps
    warmup: float = 0.2  # this leading fraction of the steps is always computed
    mag_ratios: tuple[float, ...] = ()  # calibrated per-step residual magnitude ratios (static)

    def __post_init__(self):
        if self.policy not in CACHE_POLICIES:
            raise ValueError(f"cache.policy must be one of {', '.join(CACHE_POLICIES)}; got {self.policy!r}")
        for name in ("first_block_threshold", "static_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"cache.{name} must be a finite number >= 0; got {v!r}")
        if isinstance(self.max_skips, bool) or not isinstance(self.max_skips, (int, np.integer)) or self.max_skips < 1:
            raise ValueError(f"cache.max_skips must be an integer >= 1; got {self.max_skips!r}")
        w = self.warmup
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
            raise ValueError(f"cache.warmup must be a fraction of the steps in [0, 1]; got {w!r}")
        ratios = np.asarray(self.mag_ratios, np.float64)
        bad = ratios.size and (ratios.size < 2 or not np.all(np.isfinite(ratios)) or np.any(ratios <= 0))
        if ratios.ndim != 1 or bad:
            raise ValueError(f"cache.mag_ratios must be () or >= 2 finite positive numbers; got {self.mag_ratios!r}")
        if self.policy == "static" and not ratios.size:
            raise ValueError(
                "cache.policy=static needs cache.mag_ratios from a calibration run "
                "(python -m stepvideo_jax.tools.calibrate_cache --config=...)"
            )

    @classmethod
    def from_config(cls, c) -> CacheSettings:
        """From a `cache` ConfigDict (or dict); missing fields keep their defaults."""
        if c is None:
            return cls()
        d = dict(c.to_dict() if hasattr(c, "to_dict") else c)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown cache fields {unknown}; expected some of {', '.join(f.name for f in dataclasses.fields(cls))}"
            )
        if "mag_ratios" in d:
            d["mag_ratios"] = tuple(float(r) for r in d["mag_ratios"])
        return cls(**d)

    def resolved(self) -> CacheSettings:
        """`auto` replaced by the policy it picks: static with calibrated ratios, else first_block."""
        if self.policy != "auto":
            return self
        return dataclasses.replace(self, policy="static" if self.mag_ratios else "first_block")

    def warmup_steps(self, steps: int) -> int:
        return int(math.ceil(self.warmup * steps))


def interpolate_ratios(ratios: Sequence[float], steps: int) -> np.ndarray:
    """Calibrated ratios of one step count resampled (linearly, over the step fraction) to `steps`."""
    r = np.asarray(ratios, np.float64)
    if r.size == steps:
        return r
    return np.interp(np.linspace(0, 1, steps), np.linspace(0, 1, r.size), r)


def static_skip_schedule(settings: CacheSettings, steps: int) -> np.ndarray:
    """bool [steps]: True where the static policy reuses the cached residual."""
    ratios = interpolate_ratios(settings.mag_ratios, steps)
    skip = np.zeros(steps, bool)
    acc_ratio, acc_err, run = 1.0, 0.0, 0
    for i in range(settings.warmup_steps(steps), steps):
        if i == 0:
            continue  # nothing cached yet
        acc_ratio *= ratios[i]
        acc_err += abs(1.0 - acc_ratio)
        if acc_err <= settings.static_threshold and run < settings.max_skips:
            skip[i], run = True, run + 1
        else:
            acc_ratio, acc_err, run = 1.0, 0.0, 0
    return skip


def check_guidance_interval(interval) -> tuple[float, float]:
    """(lo, hi) as floats; a one-line error unless 0 <= lo < hi <= 1 (fractions of the steps)."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval must be (lo, hi) step fractions; got {interval!r}") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"guidance_interval must satisfy 0 <= lo < hi <= 1 (step fractions); got {interval!r}")
    return lo, hi


def guidance_steps(steps: int, interval: tuple[float, float]) -> np.ndarray:
    """bool [steps]: True where classifier-free guidance applies (steps i with lo <= i/steps < hi)."""
    lo, hi = interval
    frac = np.arange(steps) / steps
    return (frac >= lo) & (frac < hi)


class CacheState(NamedTuple):
    """What the sampler carries between steps (rows: [conditional B | unconditional B])."""

    probe: jax.Array  # [2B, N, D] block 0's residual at the last fully computed step (first_block)
    residual: jax.Array  # [2B, N, D] the cached blocks' residual at the last fully computed step
    valid: jax.Array  # bool [2]: the conditional / unconditional rows hold a computed step
    run: jax.Array  # int32 []: consecutive reused steps so far
    evals: jax.Array  # int32 []: batch rows x steps computed by the full block stack


def init_cache_state(model_cfg, latents: jax.Array) -> CacheState:
    """Empty cache for latents [B, F, H, W, C] of a DiT with config `model_cfg` (a DiTConfig)."""
    b, f, h, w, _ = latents.shape
    cfg = model_cfg
    n = f * (h // cfg.patch_size) * (w // cfg.patch_size)
    zeros = jnp.zeros((2 * b, n, cfg.hidden_size), cfg.jnp_dtype)
    return CacheState(zeros, zeros, jnp.zeros((2,), bool), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def residual_magnitude_ratio(residual: jax.Array, previous: jax.Array) -> jax.Array:
    """Mean over rows and tokens of ||r_t|| / ||r_{t-1}|| for residuals [R, N, D] (MagCache's ratio), float32."""
    norm = lambda r: jnp.linalg.norm(r.astype(jnp.float32), axis=-1)  # noqa: E731  [R, N]
    return jnp.mean(norm(residual) / jnp.maximum(norm(previous), 1e-12))


def _relative_l1(a: jax.Array, ref: jax.Array) -> jax.Array:
    a, ref = a.astype(jnp.float32), ref.astype(jnp.float32)
    return jnp.sum(jnp.abs(a - ref)) / jnp.maximum(jnp.sum(jnp.abs(ref)), 1e-12)


def cached_denoise_step(
    model,
    latents,
    sigma,
    sigma_next,
    text,
    condition,
    motion_score,
    guidance_scale,
    state: CacheState,
    may_skip,
    *,
    policy: str,
    use_cfg: bool,
    threshold: float,
    max_skips: int,
):
    """One Euler step with step caching: float32 latents [B, F, H, W, C] -> (latents at sigma_next, state).

    `policy` is a resolved policy (none / first_block / static); `may_skip`: for static the schedule's
    entry for this step, for first_block whether the step is past the warm-up. As a Python bool it is
    static (the host knows it: a plain compute or, for static, a plain reuse, no `lax.cond`; the caller
    then guarantees the cache is valid for a static reuse); as a traced bool the step decides on the
    device. With `use_cfg` False only the B conditional rows are evaluated and the velocity is theirs.
    """
    b = latents.shape[0]
    rows = 2 * b if use_cfg else b
    dtype = model.cfg.jnp_dtype
    take = lambda a: None if a is None else a[:rows]  # noqa: E731
    x = (jnp.concatenate([latents, latents], axis=0) if use_cfg else latents).astype(dtype)  # [rows, F, H, W, C]
    t = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (rows,)).astype(dtype)
    cond = None
    if condition is not None:
        cond = (jnp.concatenate([condition, condition], axis=0) if use_cfg else condition).astype(dtype)
    inputs = model.embed_inputs(
        x, t, take(text.llm_states), take(text.mask), take(text.clip_states), cond, motion_score
    )
    h = inputs.tokens  # [rows, N, D]
    rows_valid = jnp.all(state.valid) if use_cfg else state.valid[0]
    ref_probe, ref_residual = state.probe[:rows], state.residual[:rows]
    if policy not in ("none", "first_block", "static"):
        raise ValueError(f"cached_denoise_step needs a resolved policy (none, first_block, static); got {policy!r}")
    host_decides = isinstance(may_skip, (bool, np.bool_))
    probe, start, can_skip = ref_probe, 0, None  # can_skip None: compute, no lax.cond
    if policy == "first_block":
        h = model.run_blocks(h, inputs, 0, 1)
        probe = h - inputs.tokens  # [rows, N, D] block 0's residual
        start = 1
        if not host_decides or may_skip:
            change = _relative_l1(probe, ref_probe)
            can_skip = jnp.asarray(may_skip) & rows_valid & (state.run < max_skips) & (change < threshold)
    elif policy == "static":
        if host_decides:
            can_skip = True if may_skip else None
        else:
            can_skip = jnp.asarray(may_skip) & rows_valid

    def compute(h):
        out = model.run_blocks(h, inputs, start)
        return out, out - h, probe

    def reuse(h):
        return h + ref_residual, ref_residual, ref_probe

    if can_skip is None:
        out, residual, new_probe = compute(h)
        can_skip = jnp.zeros((), bool)
    elif can_skip is True:
        out, residual, new_probe = reuse(h)
        can_skip = jnp.ones((), bool)
    else:
        out, residual, new_probe = jax.lax.cond(can_skip, reuse, compute, h)
    v = model.final_layer(out, inputs)  # [rows, F, H, W, C]
    if use_cfg:
        g = jnp.asarray(guidance_scale, jnp.float32).astype(v.dtype)
        v = v[b:] + g * (v[:b] - v[b:])
    computed_valid = jnp.array([True, use_cfg])
    state = CacheState(
        probe=state.probe.at[:rows].set(new_probe),
        residual=state.residual.at[:rows].set(residual),
        valid=jnp.where(can_skip, state.valid, computed_valid),
        run=jnp.where(can_skip, state.run + 1, 0).astype(jnp.int32),
        evals=state.evals + jnp.where(can_skip, 0, rows).astype(jnp.int32),
    )
    return euler_step(latents, v, sigma, sigma_next), state
