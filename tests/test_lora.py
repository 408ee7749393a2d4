"""LoRA on the DiT: adapters start as the identity, merge == on the fly, adapters sharded like their base."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.dit import DIT_SHARDING, StepVideoDiT
from stepvideo_jax.lora import LoRAConfig, LoRAParam, adapter_arrays, apply_lora, lora_param_count, merge_lora
from stepvideo_jax.sharding import MeshConfig, make_mesh, model_shardings, use_mesh
from stepvideo_jax.testing import random_model, tiny_dit_config

CFG = tiny_dit_config()


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


@pytest.mark.slow  # three tiny training runs; the adapter merge/sampling tests stay in CI
def test_lora_training_keeps_only_adapters_in_the_state_and_resumes_bit_identically(tmp_path):
    """train_ti2v:tiny_lora on random latents: the state holds adapters only (optimizer state too), the
    adapter file is written at the end, and 4 steps in two runs of 2 equal 4 uninterrupted steps."""
    from stepvideo_jax.configs import get_config
    from stepvideo_jax.lora import load_adapter
    from stepvideo_jax.training.loop import ADAPTER_FILE, train

    data = _latent_manifest(tmp_path)

    def config(steps):
        c = get_config("train_ti2v:tiny_lora")
        c.data.update(manifest=str(data), shuffle=False)
        c.train.update(steps=steps, tensorboard=False, log_every=1)
        c.checkpoint.update(every=2, async_save=False)
        c.objective.update(caption_dropout=0.0)
        return c

    whole = train(config(4), str(tmp_path / "whole"), progress=False)
    train(config(2), str(tmp_path / "split"), progress=False)
    resumed = train(config(4), str(tmp_path / "split"), progress=False)
    assert [resumed.losses[s] for s in (2, 3)] == [whole.losses[s] for s in (2, 3)]
    cfg, a1, fp = load_adapter(str(tmp_path / "whole" / ADAPTER_FILE))
    _, a2, _ = load_adapter(str(tmp_path / "split" / ADAPTER_FILE))
    assert cfg.rank == 4 and fp == "random-seed0" and set(a1) == set(a2)
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])
    assert any(np.abs(v).max() > 0 for k, v in a1.items() if k.endswith("lora_b"))  # B moved off zero


def _latent_manifest(tmp_path):
    """A precomputed-latents index of 4 random items in train_ti2v:tiny's shapes."""
    import json

    from stepvideo_jax.configs import get_config

    c = get_config("train_ti2v:tiny")
    rng = np.random.default_rng(0)
    folder = tmp_path / "latents"
    folder.mkdir()
    rows = []
    for i in range(4):
        path = folder / f"{i}.npz"
        np.savez(
            path,
            latents=rng.normal(size=(3, 4, 4, c.model.in_channels)).astype(np.float32),
            condition=rng.normal(size=(1, 4, 4, c.model.in_channels)).astype(np.float32),
            llm_states=rng.normal(size=(8, c.model.caption_channels[0])).astype(np.float32),
            llm_mask=np.ones(8, np.int32),
            clip_states=rng.normal(size=(77, c.model.caption_channels[1])).astype(np.float32),
            motion_score=np.float32(5.0),
        )
        rows.append({"latents": str(path), "caption": f"item {i}", "height": 32, "width": 32})
    index = folder / "index.jsonl"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return index


def test_sampling_config_merges_adapter_files_and_export_uses_release_names(tmp_path):
    """--config.lora=FILE(s) --config.lora_scale=...: the loaded DiT equals the adapted model on the fly
    (scales combine additively); the release-layout export names released keys in PyTorch layout."""
    from stepvideo_jax.components import load_components
    from stepvideo_jax.configs import get_config
    from stepvideo_jax.lora import adapter_arrays, release_layout, save_adapter
    from stepvideo_jax.testing import tiny_pipeline_components

    config = get_config("ti2v:tiny")
    config.tokenizer_cache_dir = str(tmp_path / "tok")
    adapted, _, _ = tiny_pipeline_components(config)
    lora_cfg = LoRAConfig(rank=2, alpha=4.0)
    apply_lora(adapted, lora_cfg, seed=3)
    _randomize_b(adapted)
    path = str(tmp_path / "a.safetensors")
    save_adapter(path, adapter_arrays(adapted), lora_cfg, base_fingerprint="test")

    dit_cfg = adapted.cfg
    rng = np.random.default_rng(0)
    f, c = 3, dit_cfg.in_channels
    inputs = dict(
        hidden_states=rng.normal(size=(1, f, c, 4, 6)).astype(np.float32),
        timestep=np.array([0.5], np.float32),
        encoder_hidden_states=rng.normal(size=(1, 6, dit_cfg.caption_channels[0])).astype(np.float32),
        encoder_attention_mask=np.ones((1, 77 + 6), np.int32),
        encoder_hidden_states_2=rng.normal(size=(1, 77, dit_cfg.caption_channels[1])).astype(np.float32),
        condition_hidden_states=rng.normal(size=(1, f, c, 4, 6)).astype(np.float32),
        motion_score=5.0,
    )
    on_the_fly = np.asarray(adapted(**inputs))
    config.lora, config.lora_scale = path, "1.0"
    merged, _, _ = load_components(config)
    assert _rel(np.asarray(merged(**inputs)), on_the_fly) <= 1e-5
    config.lora, config.lora_scale = f"{path},{path}", "0.5,0.5"  # two halves == the whole
    halves, _, _ = load_components(config)
    assert _rel(np.asarray(halves(**inputs)), on_the_fly) <= 1e-5
    config.lora_scale = "1,2,3"
    with pytest.raises(ValueError, match="lora_scale has 3 values for 2 adapters"):
        load_components(config)

    release = release_layout(adapter_arrays(adapted))
    d, h, hd = dit_cfg.hidden_size, dit_cfg.num_heads, dit_cfg.head_dim
    assert release["transformer_blocks.0.attn1.wqkv.lora_A.weight"].shape == (2, d)
    assert release["transformer_blocks.1.attn1.wqkv.lora_B.weight"].shape == (3 * h * hd, 2)
    assert release["transformer_blocks.0.ff.net.2.lora_A.weight"].shape == (2, 4 * d)


def _dequantized_float_model(float_model, qmodel):
    """The float model with every quantized kernel replaced by its dequantized value (q * scale)."""
    from stepvideo_jax.quantize import quantized_kernels

    qflat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(qmodel))}
    fflat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(float_model))}
    for key, k in quantized_kernels(qmodel).items():
        q = np.asarray(qflat[key][...]).astype(np.float32)
        s = np.asarray(qflat[k.scale][...])
        s = s.reshape(s.shape[: k.leading] + (1,) * k.num_in_axes + s.shape[k.leading :])
        fflat[key][...] = q * s
    return float_model


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_qlora_adapters_on_a_quantized_base_equal_the_dequantized_float_model_with_them(mode):
    """QLoRA: adapters wrap the weight-only quantized linears (base int8 / e4m3, adapters float32); with
    B nonzero the output equals the dequantized-float model carrying the same adapters (rel. L2 <= 1e-5,
    float32 rounding of (x @ q) * s vs x @ (q * s)), and the adapters' delta matches too."""
    from stepvideo_jax.layers.quantized import QuantizedDense
    from stepvideo_jax.quantize import quantize_model

    make = lambda: random_model(lambda: StepVideoDiT(CFG, rngs=nnx.Rngs(0)), seed=0)
    qbase = quantize_model(make(), mode)
    base_out = np.asarray(qbase(**_inputs()))
    lora = LoRAConfig(rank=4, alpha=8.0)
    qmodel = apply_lora(quantize_model(make(), mode), lora, seed=3)
    wrapped = [m for _, m in nnx.iter_modules(qmodel) if type(m).__name__ == "LoRALinear"]
    assert len(wrapped) == 7 and all(isinstance(m.base, QuantizedDense) for m in wrapped)
    frozen = nnx.state(qmodel, nnx.Not(LoRAParam))
    assert {np.dtype(v.dtype) for _, v in nnx.to_flat_state(nnx.state(qmodel, LoRAParam))} == {np.dtype(np.float32)}
    kernels = [v for p, v in nnx.to_flat_state(frozen) if p[-1] == "kernel" and "blocks" in p]
    assert kernels and all(v.dtype == (np.int8 if mode == "int8" else jax.numpy.float8_e4m3fn) for v in kernels)
    _randomize_b(qmodel)
    q_out = np.asarray(qmodel(**_inputs()))
    assert _rel(q_out, base_out) > 1e-3  # the adapters change the quantized model's output

    dequant = _dequantized_float_model(make(), qbase)
    deq_base_out = np.asarray(dequant(**_inputs()))
    dequant = apply_lora(dequant, lora, seed=3)
    _randomize_b(dequant)
    np.testing.assert_array_equal(  # same adapters (A from the seed, B from _randomize_b)
        *[np.concatenate([v.ravel() for v in adapter_arrays(m).values()]) for m in (qmodel, dequant)]
    )
    deq_out = np.asarray(dequant(**_inputs()))
    assert _rel(q_out, deq_out) <= 1e-5
    assert _rel(q_out - base_out, deq_out - deq_base_out) <= 1e-4  # the adapters' delta itself
    with pytest.raises(ValueError, match="cannot merge adapters into quantized layers"):
        merge_lora(qmodel)


@pytest.mark.slow  # two demo-size training runs (~100 s); QLoRA == the dequantized float model stays in CI
def test_qlora_training_through_the_loop_on_the_int8_demo_base(tmp_path):
    """`demo:lora` with `model.quantize=int8` (QLoRA: the shipped bf16 DiT quantized at restore, frozen
    under float32 adapters) trains through the loop: the first loss is the bf16 base's within int8's
    error but not equal to it (the quantized base is what ran), and the adapters move."""
    import json

    from stepvideo_jax.configs import get_config
    from stepvideo_jax.lora import load_adapter
    from stepvideo_jax.training.loop import ADAPTER_FILE, train

    m = get_config("demo:lora").model
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        path = tmp_path / f"{i}.npz"
        np.savez(
            path,
            latents=rng.normal(size=(3, 8, 8, m.in_channels)).astype(np.float32),
            condition=rng.normal(size=(1, 8, 8, m.in_channels)).astype(np.float32),
            llm_states=rng.normal(size=(8, m.caption_channels[0])).astype(np.float32),
            llm_mask=np.ones(8, np.int32),
            clip_states=rng.normal(size=(77, m.caption_channels[1])).astype(np.float32),
            motion_score=np.float32(5.0),
        )
        rows.append({"latents": str(path), "caption": f"item {i}", "height": 64, "width": 64})
    (tmp_path / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(quantize):
        c = get_config("demo:lora")
        c.data.update(manifest=str(tmp_path / "index.jsonl"), shuffle=False, batch_size=2)
        c.model.quantize = quantize
        c.train.update(steps=2, tensorboard=False, log_every=1)
        c.checkpoint.update(every=2, async_save=False)
        c.objective.update(caption_dropout=0.0)
        return train(c, str(tmp_path / quantize), progress=False)

    bf16, int8 = run("none"), run("int8")
    assert bf16.losses[0] != int8.losses[0]
    assert abs(int8.losses[0] - bf16.losses[0]) < 0.02 * bf16.losses[0], (bf16.losses, int8.losses)
    _, adapters, _ = load_adapter(str(tmp_path / "int8" / ADAPTER_FILE))
    assert any(np.abs(v).max() > 0 for k, v in adapters.items() if k.endswith("lora_b"))
