"""Attention on a device mesh: Ulysses sequence parallelism for self-attention, local queries for
cross-attention, any registered kernel inside (``jax.shard_map``).

With the active mesh/rules (``stepvideo_jax.sharding.use_mesh_rules``), activations are sharded
[batch, seq, heads, kv] -> (batch axes, sequence axes, tensor, -). Self-attention needs every key for
every query, so around the kernel:

* **Ulysses** (when the local head count divides by the sequence shards): an all-to-all turns the
  sequence-sharded q, k, v into head-sharded ones with the full sequence, the kernel runs on whole
  sequences for a subset of heads, and a second all-to-all turns the output back.
* **all-gather KV** (otherwise, e.g. more sequence shards than heads): queries stay local and keys /
  values are gathered over the sequence shards.

Cross-attention keys (the text) are not sequence-sharded, so each device attends its own queries.
Without an active mesh this is ``dot_product_attention``.
"""

from __future__ import annotations

import math

import jax

from stepvideo_jax.attention import check_kernel, dot_product_attention, resolve_kernel
from stepvideo_jax.sharding import current_mesh_rules, logical_to_spec

__all__ = ["sharded_attention", "ulysses_plan"]

_ACT = ("batch", "seq", "heads", "kv")


def ulysses_plan(mesh, rules, q_shape, *, self_attention: bool):
    """(q spec, seq mesh axes, mode) where mode is 'local', 'ulysses' or 'gather_kv'."""
    spec = logical_to_spec(_ACT, rules, shape=q_shape, mesh=mesh)
    seq_axes = spec[1]
    seq_axes = () if seq_axes is None else ((seq_axes,) if isinstance(seq_axes, str) else tuple(seq_axes))
    if not self_attention or not seq_axes:
        return spec, seq_axes, "local"
    head_axes = spec[2]
    head_axes = () if head_axes is None else ((head_axes,) if isinstance(head_axes, str) else tuple(head_axes))
    local_heads = q_shape[2] // math.prod(mesh.shape[a] for a in head_axes)
    n_seq = math.prod(mesh.shape[a] for a in seq_axes)
    return spec, seq_axes, ("ulysses" if local_heads % n_seq == 0 else "gather_kv")


def sharded_attention(
    q: jax.Array,  # [B, Sq, H, D]
    k: jax.Array,  # [B, Sk, H, D]
    v: jax.Array,  # [B, Sk, H, D]
    *,
    kv_mask: jax.Array | None = None,  # [B, Sk]
    kernel: str,
    self_attention: bool,
    scale: float | None = None,
) -> jax.Array:
    kernel = resolve_kernel(kernel)
    active = current_mesh_rules()
    if active is None:
        return dot_product_attention(q, k, v, kv_mask=kv_mask, kernel=kernel, scale=scale)
    check_kernel(kernel)
    mesh, rules = active
    q_spec, seq_axes, mode = ulysses_plan(mesh, rules, q.shape, self_attention=self_attention)
    batch_axes, head_axes = q_spec[0], q_spec[2]
    P = jax.sharding.PartitionSpec
    kv_spec = q_spec if self_attention else P(batch_axes, None, head_axes, None)
    mask_spec = P(batch_axes, q_spec[1] if self_attention else None)
    seq_name = seq_axes[0] if len(seq_axes) == 1 else seq_axes

    def local(q, k, v, kv_mask):
        if mode == "ulysses":
            # [b, S/n, h, d] -> [b, S, h/n, d]: gather the sequence, scatter the heads.
            to_heads = lambda x: jax.lax.all_to_all(x, seq_name, split_axis=2, concat_axis=1, tiled=True)
            q, k, v = to_heads(q), to_heads(k), to_heads(v)
            if kv_mask is not None:
                kv_mask = jax.lax.all_gather(kv_mask, seq_name, axis=1, tiled=True)
            out = dot_product_attention(q, k, v, kv_mask=kv_mask, kernel=kernel, scale=scale)
            return jax.lax.all_to_all(out, seq_name, split_axis=1, concat_axis=2, tiled=True)
        if mode == "gather_kv":
            k = jax.lax.all_gather(k, seq_name, axis=1, tiled=True)
            v = jax.lax.all_gather(v, seq_name, axis=1, tiled=True)
            if kv_mask is not None:
                kv_mask = jax.lax.all_gather(kv_mask, seq_name, axis=1, tiled=True)
        return dot_product_attention(q, k, v, kv_mask=kv_mask, kernel=kernel, scale=scale)

    # check_vma=False: the kernels' scans start from constants (not device-varying) carries.
    if kv_mask is None:
        fn = jax.shard_map(
            lambda q, k, v: local(q, k, v, None),
            mesh=mesh,
            in_specs=(q_spec, kv_spec, kv_spec),
            out_specs=q_spec,
            check_vma=False,
        )
        return fn(q, k, v)
    fn = jax.shard_map(
        local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, mask_spec), out_specs=q_spec, check_vma=False
    )
    return fn(q, k, v, kv_mask)
