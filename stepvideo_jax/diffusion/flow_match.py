"""Flow-matching schedule and Euler solver of the release (`FlowMatchDiscreteScheduler`, reverse=False).

Sigma is the data fraction: it rises from 0 (pure noise) to 1 (data). The model is fed sigma itself as
its timestep (the DiT multiplies it by 1000 inside), and each Euler step moves the latents by
``velocity * (sigma_next - sigma)`` in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["flow_sigmas", "shift_time", "euler_step"]


def shift_time(t, time_shift: float):
    """The SD3 time shift s*t / (1 + (s-1)*t), which spends more steps near t = 1 (noise) for s > 1."""
    return (time_shift * t) / (1 + (time_shift - 1) * t)


def flow_sigmas(num_steps: int, time_shift: float) -> np.ndarray:
    """The N+1 sigmas of an N-step sampling run, float32, rising from 0 (noise) to 1 (data).

    linspace(1, 0, N+1) (noise level), shifted, then 1 - that; all in float32 as released.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}")
    if not math.isfinite(time_shift) or time_shift <= 0:
        raise ValueError(f"time_shift must be a finite number > 0; got {time_shift!r}")
    t = np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float32)  # [N+1] noise level, 1 -> 0
    s = np.float32(time_shift)
    return (np.float32(1) - shift_time(t, s)).astype(np.float32)


def euler_step(latents: jax.Array, velocity: jax.Array, sigma, sigma_next) -> jax.Array:
    """x + v * (sigma_next - sigma), upcast to float32 (the release's `step`)."""
    dt = jnp.asarray(sigma_next, jnp.float32) - jnp.asarray(sigma, jnp.float32)
    return latents.astype(jnp.float32) + velocity.astype(jnp.float32) * dt
