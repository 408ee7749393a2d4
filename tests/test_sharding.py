"""Sharding on 8 simulated CPU devices: the mesh, the logical rules, parameters created in their
shardings, and the sharded DiT forward equal to the single-device one on every mesh layout."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from stepvideo_jax.dit import DIT_SHARDING, DiTConfig, StepVideoDiT
from stepvideo_jax.sharding import (
    MeshConfig,
    constrain,
    create_sharded_model,
    logical_to_spec,
    make_mesh,
    model_shardings,
    replicated_fraction,
    use_mesh_rules,
)

MESHES = {
    "fsdp8": MeshConfig(fsdp=8),
    "fsdp2_tensor4": MeshConfig(fsdp=2, tensor=4),
    "data2_seq4_ulysses": MeshConfig(data=2, fsdp=1, sequence=4),
    "fsdp2_seq2_tensor2": MeshConfig(fsdp=2, sequence=2, tensor=2),
}


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def tiny_cfg(**kw):
    base = dict(
        num_heads=8, head_dim=16, num_layers=2, in_channels=8, out_channels=8, caption_channels=(32, 16),
        rope_split=(8, 4, 4), use_additional_conditions=True, attention_kernel="xla",
    )  # fmt: skip
    base.update(kw)
    return DiTConfig(**base)


def dit_inputs(cfg, b=2, f=2, h=4, w=4, llm=6, clip=3):
    keys = jax.random.split(jax.random.key(7), 4)
    lat = jax.random.normal(keys[0], (b, f, h, w, cfg.in_channels))
    cond = jax.random.normal(keys[1], lat.shape)
    llm_states = jax.random.normal(keys[2], (b, llm, cfg.caption_channels[0]))
    clip_states = jax.random.normal(keys[3], (b, clip, cfg.caption_channels[1]))
    n_valid = jnp.array([clip + 4, clip + 6])[:b]
    mask = (jnp.arange(clip + llm)[None] < n_valid[:, None]).astype(jnp.int32)
    return (lat, jnp.array([0.3, 0.3])[:b], llm_states, mask, clip_states, cond, 5.0)


def _forward(model, args):
    return model.forward(*args)


# ------------------------------------------------------------------------------------------- mesh
def test_mesh_config_fills_and_validates():
    assert MeshConfig(fsdp=-1, tensor=2).ici_sizes(8) == (1, 4, 1, 2)
    assert MeshConfig.parse("data=2,sequence=4").ici_sizes(8) == (2, 1, 4, 1)
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1))
    assert mesh.axis_names == ("data", "fsdp", "sequence", "tensor") and mesh.shape["fsdp"] == 4
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        MeshConfig(data=-1, fsdp=-1).ici_sizes(8)
    with pytest.raises(ValueError, match="expected 8"):
        make_mesh(MeshConfig(data=2, fsdp=2))
    with pytest.raises(ValueError, match="AXIS=SIZE"):
        MeshConfig.parse("model=2")


def test_logical_to_spec_is_shape_aware():
    mesh = make_mesh(MeshConfig(fsdp=8))
    # A CFG batch of 2 cannot be split 8 ways, so fsdp goes to the sequence instead.
    act = ("batch", "seq", "embed")
    assert logical_to_spec(act, DIT_SHARDING, shape=(2, 64, 32), mesh=mesh) == P(None, "fsdp", None)
    assert logical_to_spec(act, DIT_SHARDING, shape=(8, 64, 32), mesh=mesh) == P("fsdp", None, None)
    assert logical_to_spec(("embed", "heads", "kv"), DIT_SHARDING.params, shape=(64, 8, 48), mesh=mesh) == P(
        "fsdp", None, None
    )
    # The old call form (rules as a plain table, no shape) keeps working.
    assert logical_to_spec(("a", "b"), [("a", "x"), ("b", ("x", "y"))]) == P("x", "y")
    x = jnp.ones((2, 16))
    assert constrain(x, ("batch", "embed")) is x  # identity without a mesh


# ------------------------------------------------------------------------------------- parameters
def test_parameters_are_created_in_their_shardings():
    cfg = tiny_cfg()
    mesh = make_mesh(MeshConfig(fsdp=2, tensor=4))
    make = lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0))
    model = create_sharded_model(make, mesh, DIT_SHARDING)
    wqkv = model.blocks.attn1.wqkv.kernel[...]  # [layers, embed, heads, 3*hd]
    assert wqkv.sharding.spec == P(None, "fsdp", "tensor", None)
    assert wqkv.addressable_shards[0].data.shape == (2, cfg.hidden_size // 2, cfg.num_heads // 4, 3 * cfg.head_dim)
    # Same values as an eager single-device build (threefry is partitionable; jit may differ by an ulp).
    eager = make()
    np.testing.assert_allclose(np.asarray(wqkv), np.asarray(eager.blocks.attn1.wqkv.kernel[...]), rtol=1e-6, atol=1e-7)
    shardings = model_shardings(nnx.eval_shape(make), mesh, DIT_SHARDING)
    assert shardings["blocks"]["ff"]["w_in"]["kernel"].spec == P(None, "fsdp", "tensor")


def test_fsdp_replicates_under_two_percent_of_dit_bytes():
    # The real 30B DiT, abstractly: which parameters would stay whole on every device.
    cfg = DiTConfig(param_dtype="bfloat16", dtype="bfloat16")
    mesh = make_mesh(MeshConfig(fsdp=8))
    abstract = nnx.eval_shape(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)))
    shardings = model_shardings(abstract, mesh, DIT_SHARDING)
    total = replicated = 0
    for (_path, var), (_, sh) in zip(nnx.to_flat_state(nnx.state(abstract)), nnx.to_flat_state(shardings)):
        nbytes = math.prod(var.shape) * jnp.dtype(var.dtype).itemsize
        total += nbytes
        replicated += nbytes if sh.is_fully_replicated else 0
    assert total > 50e9  # ~30B params in bf16
    assert replicated / total <= 0.02, f"{replicated / total:.4f} of the DiT bytes are replicated"
    # And concretely on the tiny model.
    tiny = create_sharded_model(
        lambda: StepVideoDiT(tiny_cfg(num_heads=8, head_dim=32, rope_split=(16, 8, 8)), rngs=nnx.Rngs(0)),
        mesh,
        DIT_SHARDING,
    )
    assert replicated_fraction(tiny) <= 0.02


# ------------------------------------------------------------------------------- sharded forward
@pytest.fixture(scope="module")
def reference_forward():
    cfg = tiny_cfg()
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(0))
    args = dit_inputs(cfg)
    return cfg, nnx.state(model), np.asarray(nnx.jit(_forward)(model, args)), args


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_sharded_dit_forward_equals_single_device(reference_forward, mesh_name):
    cfg, state, expected, args = reference_forward
    mesh = make_mesh(MESHES[mesh_name])
    model = create_sharded_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), mesh, DIT_SHARDING)
    # The reference's exact values, placed in the sharded model's shardings (jit and eager random
    # init can differ in the last ulp).
    nnx.update(model, jax.device_put(state, model_shardings(model, mesh, DIT_SHARDING)))
    with use_mesh_rules(mesh, DIT_SHARDING):
        fn = nnx.jit(_forward)
        out = fn(model, args)
        hlo = fn.lower(model, args).as_text() if mesh_name == "data2_seq4_ulysses" else ""
    assert out.sharding.num_devices == 8
    assert rel_l2(out, expected) <= 1e-5, rel_l2(out, expected)
    if hlo:
        assert "all_to_all" in hlo or "all-to-all" in hlo  # Ulysses ran


def test_ulysses_on_more_sequence_shards_than_heads_gathers_kv(reference_forward):
    # 8 sequence shards, 4 heads: heads cannot be scattered 8 ways, so keys/values are gathered.
    cfg = tiny_cfg(num_heads=4, head_dim=32, rope_split=(16, 8, 8), attention_kernel="chunked")
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(1))
    args = dit_inputs(cfg)
    expected = np.asarray(nnx.jit(_forward)(model, args))
    mesh = make_mesh(MeshConfig(fsdp=1, sequence=8))
    with use_mesh_rules(mesh, DIT_SHARDING):
        out = nnx.jit(_forward)(model, args)
    assert rel_l2(out, expected) <= 1e-5
