"""``splash`` attention: the Pallas TPU splash-attention kernel (``jax.experimental.pallas.ops.tpu``).

When the program targets a TPU (the default backend, or the devices of the active mesh, e.g.
compile-only TPU devices for a deviceless AOT compile) it is lowered to a Mosaic kernel; elsewhere
it runs in Pallas interpret mode (slow, for tests). The kernel
works on [H, S, D] per example with sequence lengths in multiples of its blocks (128-lane tiles):
lengths are padded, and the key mask (and the padding) goes in as segment ids: queries are segment
0, valid keys segment 0, masked / padded keys segment 1. The softmax scale is folded into q.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from stepvideo_jax.attention import register_kernel, target_platform

__all__ = ["splash_attention", "BLOCK"]

BLOCK = 512
_LANES = 128


def _available() -> bool:
    return target_platform() in ("tpu", "cpu")


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@functools.lru_cache(maxsize=32)
def _kernel(heads: int, q_len: int, kv_len: int, bq: int, bkv: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    mask = sm.MultiHeadMask([sm.FullMask((q_len, kv_len)) for _ in range(heads)])
    sizes = sk.BlockSizes(
        block_q=bq, block_kv=bkv, block_kv_compute=bkv,
        block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
        block_q_dq=bq, block_kv_dq=bkv,
    )  # fmt: skip
    return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, *, kv_mask, scale, block: int = BLOCK, interpret: bool | None = None):
    """q [B, Sq, H, D], k/v [B, Sk, H, D], kv_mask [B, Sk] -> [B, Sq, H, D]."""
    if interpret is None:
        interpret = target_platform() != "tpu"
    b, sq, h, d = q.shape
    sk_len = k.shape[1]
    bq = min(block, _round_up(sq, _LANES))
    bkv = min(block, _round_up(sk_len, _LANES))
    sq_pad, sk_pad = _round_up(sq, bq), _round_up(sk_len, bkv)
    valid = jnp.ones((b, sk_len), bool) if kv_mask is None else kv_mask.astype(bool)
    valid = jnp.pad(valid, ((0, 0), (0, sk_pad - sk_len)))  # padded keys are invalid
    to_hsd = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    qh = to_hsd(q * jnp.asarray(scale, q.dtype), sq_pad)  # [B, H, Sq', D]
    kh, vh = to_hsd(k, sk_pad), to_hsd(v, sk_pad)
    kernel = _kernel(h, sq_pad, sk_pad, bq, bkv, interpret)

    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    def one(qi, ki, vi, vali):
        seg = sk.SegmentIds(q=jnp.zeros((sq_pad,), jnp.int32), kv=(~vali).astype(jnp.int32))
        return kernel(qi, ki, vi, segment_ids=seg)

    out = jax.vmap(one)(qh, kh, vh, valid)  # [B, H, Sq', D]
    return out.transpose(0, 2, 1, 3)[:, :sq].astype(v.dtype)


@register_kernel("splash", available=_available)
def _splash_kernel(q, k, v, *, kv_mask, scale):
    return splash_attention(q, k, v, kv_mask=kv_mask, scale=scale)
