"""3D rotary position embedding of the Step-Video DiT.

head_dim is split into (frame, height, width) channel groups (64, 32, 32 in the release); each
group is rotated with rotate-half (first half / second half) over its own width, base 10000, with
positions of the (f, h, w) grid flattened frame-major.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["grid_positions", "rope_tables", "apply_rope"]


def grid_positions(frames: int, height: int, width: int) -> jax.Array:
    """[F*H*W, 3] int32 (f, h, w) positions, frame-major (the order tokens are flattened in)."""
    f, h, w = jnp.meshgrid(jnp.arange(frames), jnp.arange(height), jnp.arange(width), indexing="ij")
    return jnp.stack([f.reshape(-1), h.reshape(-1), w.reshape(-1)], axis=-1).astype(jnp.int32)


def rope_tables(positions: jax.Array, split: tuple[int, ...], base: float) -> tuple[jax.Array, jax.Array]:
    """positions [N, 3] -> (cos, sin) each [N, sum(split)] float32, laid out group by group."""
    cos, sin = [], []
    for axis, width in enumerate(split):
        inv_freq = 1.0 / (base ** (jnp.arange(0, width, 2, dtype=jnp.float32) / width))  # [width/2]
        freqs = positions[:, axis].astype(jnp.float32)[:, None] * inv_freq[None, :]  # [N, width/2]
        freqs = jnp.concatenate([freqs, freqs], axis=-1)  # [N, width]
        cos.append(jnp.cos(freqs))
        sin.append(jnp.sin(freqs))
    return jnp.concatenate(cos, axis=-1), jnp.concatenate(sin, axis=-1)


def _rotate_half_groups(x: jax.Array, split: tuple[int, ...]) -> jax.Array:
    out, start = [], 0
    for width in split:
        seg = x[..., start : start + width]
        half = width // 2
        out.extend([-seg[..., half:], seg[..., :half]])
        start += width
    return jnp.concatenate(out, axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, split: tuple[int, ...]) -> jax.Array:
    """x [B, N, H, D]; cos/sin [N, D] -> x rotated, in x's dtype (tables applied in x's dtype as released)."""
    c = cos[None, :, None, :].astype(x.dtype)
    s = sin[None, :, None, :].astype(x.dtype)
    return x * c + _rotate_half_groups(x, split) * s
