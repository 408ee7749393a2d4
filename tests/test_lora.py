"""LoRA on the DiT: adapters start as the identity, merge == on the fly, adapters sharded like their base."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.dit import DIT_SHARDING, DiTConfig, StepVideoDiT
from stepvideo_jax.lora import LoRAConfig, LoRAParam, apply_lora, lora_param_count, merge_lora, adapter_arrays
from stepvideo_jax.sharding import MeshConfig, make_mesh, model_shardings, use_mesh
from stepvideo_jax.testing import random_model

CFG = DiTConfig(num_heads=4, head_dim=32, in_channels=8, out_channels=8, num_layers=2, caption_channels=(16, 12),
                rope_split=(16, 8, 8), use_additional_conditions=True, param_dtype="float32", dtype="float32",
                attention_kernel="xla")


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        hidden_states=rng.normal(size=(2, 3, 8, 4, 4)).astype(np.float32),
        timestep=np.array([0.3, 0.7], np.float32),
        encoder_hidden_states=rng.normal(size=(2, 5, 16)).astype(np.float32),
        encoder_attention_mask=np.ones((2, 82), np.int32),
        encoder_hidden_states_2=rng.normal(size=(2, 77, 12)).astype(np.float32),
        condition_hidden_states=rng.normal(size=(2, 3, 8, 4, 4)).astype(np.float32),
        motion_score=5.0,
    )


def _randomize_b(model, seed=1):
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, LoRAParam)):
        if path[-1] == "lora_b":
            var[...] = rng.normal(0, 0.05, var.shape).astype(np.float32)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("scan", [True, False])
def test_adapters_start_as_identity_and_merge_equals_on_the_fly(scan):
    cfg = dataclasses.replace(CFG, scan_layers=scan)
    base = random_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), seed=0)
    expected = np.asarray(base(**_inputs()))
    model = apply_lora(random_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), seed=0), LoRAConfig(rank=4, alpha=8.0))
    np.testing.assert_array_equal(np.asarray(model(**_inputs())), expected)  # B = 0: exactly the base
    adapters, base_count = lora_param_count(model)
    # 2 layers x (wqkv, wo, wq, wkv, wo, w_in, w_out) adapters of rank 4
    d, h, hd, f = 128, 4, 32, 512
    per_layer = (d + 3 * h * hd) + (h * hd + d) + (d + h * hd) + (d + 2 * h * hd) + (h * hd + d) + (d + f) + (f + d)
    assert adapters == 2 * 4 * per_layer and adapters < 0.2 * base_count
    _randomize_b(model)
    on_the_fly = np.asarray(model(**_inputs()))
    assert _rel(on_the_fly, expected) > 1e-3  # the adapters do change the output
    merged = merge_lora(model)
    assert not nnx.state(merged, LoRAParam)  # the wrappers are gone
    assert _rel(np.asarray(merged(**_inputs())), on_the_fly) <= 1e-5


def test_adapters_are_sharded_like_their_base_weights():
    mesh = make_mesh(MeshConfig(fsdp=-1))
    model = apply_lora(random_model(lambda: StepVideoDiT(CFG, rngs=nnx.Rngs(0)), seed=0), LoRAConfig(rank=4))
    shardings = model_shardings(nnx.state(model, LoRAParam), mesh, DIT_SHARDING)
    flat = {".".join(map(str, p)): s for p, s in nnx.to_flat_state(shardings)}
    # wqkv's A is [layers, embed, r]: embed on fsdp as the kernel's embed axis; B [layers, r, heads, kv]
    assert flat["blocks.attn1.wqkv.lora_a"].spec == jax.sharding.PartitionSpec(None, "fsdp", None)
    assert flat["blocks.ff.w_out.lora_b"].spec == jax.sharding.PartitionSpec(None, None, "fsdp")
    _randomize_b(model)
    expected = np.asarray(model(**_inputs()))
    graphdef, state = nnx.split(model)
    sharded = nnx.merge(graphdef, jax.device_put(state, model_shardings(state, mesh, DIT_SHARDING)))
    with use_mesh(mesh):
        np.testing.assert_allclose(np.asarray(sharded(**_inputs())), expected, rtol=1e-5, atol=1e-5)


def test_bad_lora_configs_fail_in_one_line():
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(random_model(lambda: StepVideoDiT(CFG, rngs=nnx.Rngs(0)), seed=0), LoRAConfig(targets=("nothing",)))
    model = apply_lora(random_model(lambda: StepVideoDiT(CFG, rngs=nnx.Rngs(0)), seed=0), LoRAConfig(rank=2))
    assert set(adapter_arrays(model)) >= {"blocks.attn1.wqkv.lora_a", "blocks.ff.w_in.lora_b"}
