"""``cudnn`` attention: ``jax.nn.dot_product_attention(..., implementation="cudnn")`` on NVIDIA GPUs.

The key mask goes in as ``key_value_seq_lengths`` when it is a prefix mask (the DiT's text mask
keeps each sample's first n keys); a general mask goes in as a boolean mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stepvideo_jax.attention import register_kernel

__all__ = ["cudnn_attention"]


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def cudnn_attention(q, k, v, *, kv_mask, scale, prefix_mask: bool = True):
    if kv_mask is None:
        return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="cudnn")
    if prefix_mask:
        lengths = jnp.sum(kv_mask.astype(jnp.int32), axis=1)  # [B]
        q_lengths = jnp.full_like(lengths, q.shape[1])
        return jax.nn.dot_product_attention(
            q, k, v, scale=scale, query_seq_lengths=q_lengths, key_value_seq_lengths=lengths, implementation="cudnn"
        )
    mask = kv_mask[:, None, None, :]  # [B, 1, 1, Sk]
    return jax.nn.dot_product_attention(q, k, v, scale=scale, mask=mask, implementation="cudnn")


@register_kernel("cudnn", available=_on_gpu)
def _cudnn_kernel(q, k, v, *, kv_mask, scale):
    # Every key mask in this code base is a prefix mask (valid keys first, padding after).
    return cudnn_attention(q, k, v, kv_mask=kv_mask, scale=scale, prefix_mask=True)
