"""``chunked`` attention: query blocks x key blocks with an online (streaming) softmax in plain XLA.

Memory is linear in the number of tokens: only one [B, H, q_block, kv_block] logits tile is live at a
time, and each query block is rematerialised in the backward pass instead of saving its tiles.
The block sizes are upper bounds: a length is split into the fewest equal blocks that fit, and the
remainder (less than one row per block) is padded; padded keys are masked out and padded queries dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stepvideo_jax.attention import register_kernel

__all__ = ["chunked_attention", "Q_BLOCK", "KV_BLOCK"]

Q_BLOCK = 512
KV_BLOCK = 1024
_HI = jax.lax.Precision.HIGHEST


def _pad_to(x: jax.Array, axis: int, multiple: int) -> jax.Array:
    pad = -x.shape[axis] % multiple
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def _even_block(length: int, max_block: int) -> int:
    """The size that splits `length` into the fewest blocks of at most `max_block`, as evenly as
    possible: 768 tokens with max 512 -> two blocks of 384 (no padding) rather than 512 + a padded 512."""
    blocks = -(-length // max_block)
    return -(-length // blocks)


def chunked_attention(
    q: jax.Array,  # [B, Sq, H, D]
    k: jax.Array,  # [B, Sk, H, D]
    v: jax.Array,  # [B, Sk, H, Dv]
    *,
    kv_mask: jax.Array | None,  # [B, Sk] bool
    scale: float,
    q_block: int = Q_BLOCK,
    kv_block: int = KV_BLOCK,
) -> jax.Array:
    b, sq, h, d = q.shape
    sk, dv = k.shape[1], v.shape[-1]
    # q_block / kv_block are upper bounds (they cap the live logits tile); equal blocks keep padding
    # (wasted FLOPs) below one row per block.
    q_block, kv_block = _even_block(sq, q_block), _even_block(sk, kv_block)
    valid = jnp.ones((b, sk), bool) if kv_mask is None else kv_mask.astype(bool)
    qp = _pad_to(q, 1, q_block)
    kp, vp, validp = _pad_to(k, 1, kv_block), _pad_to(v, 1, kv_block), _pad_to(valid, 1, kv_block)
    nq, nk = qp.shape[1] // q_block, kp.shape[1] // kv_block
    # Blocks on a leading axis for lax.map / lax.scan.
    q_blocks = qp.reshape(b, nq, q_block, h, d).transpose(1, 0, 2, 3, 4)  # [nq, B, bq, H, D]
    k_blocks = kp.reshape(b, nk, kv_block, h, d).transpose(1, 0, 2, 3, 4)  # [nk, B, bk, H, D]
    v_blocks = vp.reshape(b, nk, kv_block, h, dv).transpose(1, 0, 2, 3, 4)
    m_blocks = validp.reshape(b, nk, kv_block).transpose(1, 0, 2)  # [nk, B, bk]

    @jax.checkpoint
    def one_query_block(qb: jax.Array) -> jax.Array:  # [B, bq, H, D] -> [B, bq, H, Dv]
        def step(carry, kv):
            m_prev, l_prev, acc = carry  # [B, H, bq], [B, H, bq], [B, H, bq, Dv] (float32)
            kb, vb, mb = kv
            logits = jnp.einsum("bqhd,bkhd->bhqk", qb, kb, precision=_HI).astype(jnp.float32) * scale
            logits = jnp.where(mb[:, None, None, :], logits, -jnp.inf)
            m_new = jnp.maximum(m_prev, jnp.max(logits, axis=-1))
            p = jnp.exp(logits - m_new[..., None])  # masked keys -> exp(-inf) = 0
            correction = jnp.exp(m_prev - m_new)
            l_new = l_prev * correction + jnp.sum(p, axis=-1)
            pv = jnp.einsum("bhqk,bkhd->bhqd", p.astype(vb.dtype), vb, precision=_HI).astype(jnp.float32)
            return (m_new, l_new, acc * correction[..., None] + pv), None

        # A finite floor keeps exp(m_prev - m_new) defined while a row has seen only masked keys.
        init = (
            jnp.full((b, h, q_block), -1e30, jnp.float32),
            jnp.zeros((b, h, q_block), jnp.float32),
            jnp.zeros((b, h, q_block, dv), jnp.float32),
        )
        (_, denom, acc), _ = jax.lax.scan(step, init, (k_blocks, v_blocks, m_blocks))
        out = acc / denom[..., None]  # a row with no valid key gives NaN, as the reference does
        return out.transpose(0, 2, 1, 3).astype(v.dtype)  # [B, bq, H, Dv]

    out = jax.lax.map(one_query_block, q_blocks)  # [nq, B, bq, H, Dv]
    return out.transpose(1, 0, 2, 3, 4).reshape(b, nq * q_block, h, dv)[:, :sq]


@register_kernel("chunked")
def _chunked_kernel(q, k, v, *, kv_mask, scale):
    return chunked_attention(q, k, v, kv_mask=kv_mask, scale=scale)
