"""Attention kernels against the `xla` reference (float32), the registry's errors, and the Ulysses
wrapper on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepvideo_jax.attention import available_kernels, default_kernel, dot_product_attention, sharded_attention
from stepvideo_jax.attention.chunked import chunked_attention
from stepvideo_jax.attention.splash import splash_attention
from stepvideo_jax.dit import DIT_SHARDING
from stepvideo_jax.sharding import MeshConfig, make_mesh, use_mesh_rules


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def qkv(b, sq, sk, h, d, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(k1, (b, sq, h, d)),
        jax.random.normal(k2, (b, sk, h, d)),
        jax.random.normal(k3, (b, sk, h, d)),
    )


def prefix_mask(b, sk, lengths):
    return jnp.arange(sk)[None, :] < jnp.asarray(lengths)[:, None]  # [B, Sk]


def test_registry_lists_kernels_and_rejects_unavailable():
    assert {"xla", "chunked", "splash"} <= set(available_kernels())
    assert default_kernel() == "chunked"  # on the CPU
    q, k, v = qkv(1, 4, 4, 1, 8)
    with pytest.raises(
        ValueError, match=r"'cudnn' is not available on backend 'cpu'; available kernels: chunked, splash, xla"
    ):
        dot_product_attention(q, k, v, kernel="cudnn")
    with pytest.raises(ValueError, match="available kernels"):
        dot_product_attention(q, k, v, kernel="flash9")
    with pytest.raises(ValueError, match=r"kv_mask must be \[B, Sk\]"):
        dot_product_attention(q, k, v, kv_mask=jnp.ones((1, 5), bool))


@pytest.mark.parametrize("sq,sk,blocks", [(50, 50, (16, 32)), (37, 70, (16, 32)), (600, 600, (512, 1024))])
def test_chunked_equals_xla(sq, sk, blocks):
    q, k, v = qkv(2, sq, sk, 3, 16, seed=sq)
    scale = 16**-0.5
    ref = dot_product_attention(q, k, v, kernel="xla")
    out = chunked_attention(q, k, v, kv_mask=None, scale=scale, q_block=blocks[0], kv_block=blocks[1])
    assert rel_l2(out, ref) <= 1e-5
    mask = prefix_mask(2, sk, [sk - 5, sk // 3])  # masked cross-attention (keys cut per sample)
    ref = dot_product_attention(q, k, v, kv_mask=mask, kernel="xla")
    out = chunked_attention(q, k, v, kv_mask=mask, scale=scale, q_block=blocks[0], kv_block=blocks[1])
    assert rel_l2(out, ref) <= 1e-5


def test_chunked_gradients_equal_xla():
    q, k, v = qkv(1, 45, 45, 2, 8, seed=3)
    mask = prefix_mask(1, 45, [40])
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))
    ref = jax.grad(loss(lambda q, k, v: dot_product_attention(q, k, v, kv_mask=mask)), argnums=(0, 1, 2))(q, k, v)
    chk = jax.grad(
        loss(lambda q, k, v: chunked_attention(q, k, v, kv_mask=mask, scale=8**-0.5, q_block=16, kv_block=16)),
        argnums=(0, 1, 2),
    )(q, k, v)
    for a, b in zip(chk, ref):
        assert rel_l2(a, b) <= 1e-5


def test_splash_interpret_equals_xla():
    # 200 queries and 77+70 keys: neither a multiple of the 128-token block.
    q, k, v = qkv(2, 200, 200, 2, 64, seed=1)
    ref = dot_product_attention(q, k, v, kernel="xla")
    out = splash_attention(q, k, v, kv_mask=None, scale=64**-0.5, block=128, interpret=True)
    assert rel_l2(out, ref) <= 1e-5
    _, kc, vc = qkv(2, 1, 147, 2, 64, seed=2)
    mask = prefix_mask(2, 147, [140, 90])
    ref = dot_product_attention(q, kc, vc, kv_mask=mask, kernel="xla")
    out = dot_product_attention(q, kc, vc, kv_mask=mask, kernel="splash")  # the registry path
    assert rel_l2(out, ref) <= 1e-5


@pytest.mark.parametrize(
    "mesh_cfg,heads", [(MeshConfig(data=2, fsdp=1, sequence=4), 8), (MeshConfig(fsdp=2, sequence=4), 2)]
)
def test_sharded_attention_equals_single_device(mesh_cfg, heads):
    # heads 8 over 4 sequence shards: Ulysses all-to-all; heads 2: keys/values gathered instead.
    mesh = make_mesh(mesh_cfg)
    q, k, v = qkv(2, 64, 64, heads, 8, seed=4)
    _, kc, vc = qkv(2, 1, 11, heads, 8, seed=5)
    mask = prefix_mask(2, 11, [9, 11])
    ref_self = dot_product_attention(q, k, v, kernel="xla")
    ref_cross = dot_product_attention(q, kc, vc, kv_mask=mask, kernel="xla")
    with use_mesh_rules(mesh, DIT_SHARDING):
        out_self = jax.jit(lambda q, k, v: sharded_attention(q, k, v, kernel="chunked", self_attention=True))(q, k, v)
        out_cross = jax.jit(
            lambda q, k, v, m: sharded_attention(q, k, v, kv_mask=m, kernel="xla", self_attention=False)
        )(q, kc, vc, mask)
    assert rel_l2(out_self, ref_self) <= 1e-5
    assert rel_l2(out_cross, ref_cross) <= 1e-5


def test_auto_kernel_resolves_to_the_backend_default():
    from stepvideo_jax.attention import default_kernel, dot_product_attention, resolve_kernel

    assert resolve_kernel("auto") == default_kernel() == "chunked"  # tests run on the CPU backend
    assert resolve_kernel("xla") == "xla"
    q = jax.random.normal(jax.random.key(0), (1, 37, 2, 16))
    auto = dot_product_attention(q, q, q, kernel="auto")
    chunked = dot_product_attention(q, q, q, kernel="chunked")
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(chunked))
