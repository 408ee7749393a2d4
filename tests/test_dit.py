"""The DiT: parity with the released PyTorch model, and the tricky parts pinned one by one."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dit_reference import dit_forward, random_release_weights, sinusoid
from flax import nnx
from safetensors.numpy import save_file

from stepvideo_jax.convert import ConversionError, load_dit
from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.dit.rope import apply_rope, grid_positions, rope_tables
from stepvideo_jax.layers import sinusoidal_embedding
from stepvideo_jax.tools import parity


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", ["dit_ti2v", "dit_t2v"])
def test_parity_with_release_fixture(fixture_prefix, name):
    results = dict((n, rel) for n, _, rel in parity.check_fixture(fixture_prefix(name)))
    assert results["output"] <= 1e-5, results


def test_parity_tool_exit_codes(fixture_prefix, tmp_path, capsys):
    assert parity.check_prefixes([fixture_prefix("dit_ti2v"), fixture_prefix("dit_t2v")]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") >= 2 and "FAIL" not in out
    bad = tmp_path / "bad"
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "no_such_kind", "config": {}}))
    (tmp_path / "bad.weights.safetensors").write_bytes(b"")
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "bad.io.safetensors"))
    assert parity.check_prefixes([str(bad)]) == 2
    assert "unknown fixture kind 'no_such_kind'" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{not json")
    assert parity.check_prefixes([str(tmp_path / "broken")]) == 2


def _write_fixture(tmp_path, name, cfg, seed, frames, height, width, llm_len, clip_len, valid):
    """A fixture in the release layout whose expected output comes from the float64 NumPy reference."""
    rng = np.random.default_rng(seed)
    W = random_release_weights(cfg, seed=seed)
    cap = cfg["caption_channels"]
    cap = [cap] if isinstance(cap, int) else cap
    b = len(valid)
    ti2v = cfg["use_additional_conditions"]
    io = {
        "hidden_states": rng.normal(size=(b, frames, cfg["in_channels"], height, width)).astype(np.float32),
        "timestep": rng.uniform(0, 1, size=(b,)).astype(np.float32),
        "encoder_hidden_states": rng.normal(size=(b, llm_len, cap[0])).astype(np.float32),
    }
    mask = np.zeros((b, clip_len + llm_len), np.float32)
    for i, n in enumerate(valid):
        mask[i, : clip_len + n] = 1
    io["encoder_attention_mask"] = mask
    if len(cap) == 2:
        io["encoder_hidden_states_2"] = rng.normal(size=(b, clip_len, cap[1])).astype(np.float32)
    if ti2v:
        io["condition_hidden_states"] = rng.normal(size=io["hidden_states"].shape).astype(np.float32)
    motion = 3.5 if ti2v else None
    # safetensors writes the raw buffer: a non-contiguous view would be stored scrambled.
    io["output"] = np.ascontiguousarray(
        dit_forward(
            W,
            cfg,
            io["hidden_states"],
            io["timestep"],
            io["encoder_hidden_states"],
            mask,
            io.get("encoder_hidden_states_2"),
            io.get("condition_hidden_states"),
            motion,
        ),
        dtype=np.float32,
    )
    prefix = str(tmp_path / name)
    with open(prefix + ".json", "w") as f:
        json.dump({"kind": "dit_ti2v" if ti2v else "dit_t2v", "config": cfg, "call": {"motion_score": motion}}, f)
    save_file(W, prefix + ".weights.safetensors")
    save_file(io, prefix + ".io.safetensors")
    return prefix


OTHER_CONFIGS = [
    # 3 heads, 3 layers, patch 2, other channel counts, TI2V.
    dict(
        num_attention_heads=3,
        attention_head_dim=128,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        patch_size=2,
        norm_type="ada_norm_single",
        norm_eps=1e-6,
        use_additional_conditions=True,
        caption_channels=[48, 24],
    ),
    # 1 head, 1 layer, patch 1, T2V with a single caption encoder (no CLIP projection).
    dict(
        num_attention_heads=1,
        attention_head_dim=128,
        in_channels=6,
        out_channels=5,
        num_layers=1,
        patch_size=1,
        norm_type="ada_norm_single",
        norm_eps=1e-6,
        use_additional_conditions=False,
        caption_channels=40,
    ),
]


@pytest.mark.parametrize("idx", range(len(OTHER_CONFIGS)))
def test_parity_tool_on_other_shapes(tmp_path, idx):
    cfg = OTHER_CONFIGS[idx]
    clip_len = 3 if not isinstance(cfg["caption_channels"], int) else 0
    prefix = _write_fixture(
        tmp_path, f"other{idx}", cfg, seed=idx, frames=2, height=4, width=6, llm_len=5, clip_len=clip_len, valid=[5, 2]
    )
    results = parity.check_fixture(prefix)
    assert results and all(rel <= 1e-5 for _, _, rel in results), results


# ---------------------------------------------------------------------------------------- units
def test_sinusoidal_embedding_is_cos_first():
    t = jnp.array([0.0, 3.0, 250.0])
    emb = np.asarray(sinusoidal_embedding(t, 256))
    freqs = np.exp(-math.log(10000.0) * np.arange(128) / 128)
    np.testing.assert_allclose(emb[:, :128], np.cos(np.asarray(t)[:, None] * freqs), atol=1e-5)
    np.testing.assert_allclose(emb[:, 128:], np.sin(np.asarray(t)[:, None] * freqs), atol=1e-5)
    np.testing.assert_allclose(emb, sinusoid(np.asarray(t)), atol=1e-5)


def test_rope_channel_split_and_frame_major_positions():
    f, h, w = 2, 3, 4
    pos = np.asarray(grid_positions(f, h, w))
    assert pos.shape == (f * h * w, 3)
    # frame-major flattening: token index = (fi * h + hi) * w + wi
    assert tuple(pos[(1 * h + 2) * w + 3]) == (1, 2, 3)
    split = (64, 32, 32)
    cos, sin = rope_tables(jnp.asarray(pos), split, 10000.0)
    tok = (1 * h + 2) * w + 3
    # Channel 0 (frame group, lowest frequency index 0) rotates by f * 1; channel 64 (height group) by h * 1;
    # channel 96 (width group) by w * 1; channel 1 of the frame group by f * 10000^(-2/64).
    np.testing.assert_allclose(cos[tok, 0], math.cos(1.0), rtol=1e-6)
    np.testing.assert_allclose(cos[tok, 64], math.cos(2.0), rtol=1e-6)
    np.testing.assert_allclose(cos[tok, 96], math.cos(3.0), rtol=1e-6)
    np.testing.assert_allclose(sin[tok, 1], math.sin(1.0 * 10000 ** (-2 / 64)), rtol=1e-6)
    # rotate-half within each group: the pair of channel 64 is channel 64 + 16 (not 65).
    x = np.zeros((1, f * h * w, 1, 128), np.float32)
    x[0, tok, 0, 64] = 1.0
    y = np.asarray(apply_rope(jnp.asarray(x), cos, sin, split))[0, tok, 0]
    np.testing.assert_allclose(y[64], math.cos(2.0), atol=1e-6)
    np.testing.assert_allclose(y[80], math.sin(2.0), atol=1e-6)
    assert np.count_nonzero(np.abs(y) > 1e-7) == 2


def _tiny_cfg(**kw):
    base = dict(
        num_heads=2,
        head_dim=32,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        caption_channels=(16, 8),
        rope_split=(16, 8, 8),
        use_additional_conditions=True,
    )
    base.update(kw)
    return DiTConfig(**base)


def _inputs(cfg, b=2, f=2, h=4, w=4, llm=6, clip=3, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(b, f, cfg.in_channels, h, w)), jnp.float32)
    kw = dict(
        hidden_states=x,
        timestep=jnp.asarray(rng.uniform(size=(b,)), jnp.float32),
        encoder_hidden_states=jnp.asarray(rng.normal(size=(b, llm, cfg.caption_channels[0])), jnp.float32),
        encoder_attention_mask=jnp.concatenate([jnp.ones((b, clip)), jnp.asarray([[1] * 4 + [0] * (llm - 4)] * b)], 1),
        encoder_hidden_states_2=jnp.asarray(rng.normal(size=(b, clip, cfg.caption_channels[1])), jnp.float32),
    )
    if cfg.use_additional_conditions:
        kw["condition_hidden_states"] = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
        kw["motion_score"] = 5.0
    return kw


def test_scan_equals_unrolled():
    cfg = _tiny_cfg()
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(1))
    unrolled = StepVideoDiT(_tiny_cfg(scan_layers=False), rngs=nnx.Rngs(1))
    nnx.update(unrolled, nnx.state(model))
    a = model(**_inputs(cfg))
    b = unrolled(**_inputs(cfg))
    assert rel_l2(a, b) <= 1e-6


def test_remat_policy_keeps_output():
    cfg = _tiny_cfg()
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(2))
    remat = StepVideoDiT(_tiny_cfg(remat_policy="full"), rngs=nnx.Rngs(2))
    nnx.update(remat, nnx.state(model))
    inputs = _inputs(cfg)
    loss = lambda m: jnp.sum(m(**inputs) ** 2)
    ga = nnx.grad(loss)(model)
    gb = nnx.grad(loss)(remat)
    # Recomputation reorders float32 sums, so compare each gradient by relative L2, not bitwise.
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        assert rel_l2(y, x) <= 1e-5
    with pytest.raises(ValueError, match="unknown remat policy 'sometimes'"):
        _tiny_cfg(remat_policy="sometimes")


def test_bfloat16_compute_close_to_float32():
    cfg = _tiny_cfg()
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(3))
    bf = StepVideoDiT(_tiny_cfg(dtype="bfloat16"), rngs=nnx.Rngs(3))
    nnx.update(bf, nnx.state(model))
    a = model(**_inputs(cfg))
    b = bf(**_inputs(cfg))
    assert b.dtype == jnp.bfloat16
    assert rel_l2(b.astype(jnp.float32), a) <= 2e-2
    bf_params = StepVideoDiT(_tiny_cfg(dtype="bfloat16", param_dtype="bfloat16"), rngs=nnx.Rngs(3))
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(nnx.state(bf_params, nnx.Param)))


def test_modulation_order_gates_at_positions_2_and_5():
    """shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp: with both gates zero and the
    cross-attention output zero, a block is the identity whatever the shifts and scales are."""
    from stepvideo_jax.dit.blocks import DiTBlock

    cfg = _tiny_cfg()
    block = DiTBlock(cfg, rngs=nnx.Rngs(0))
    block.scale_shift_table[...] = jnp.zeros_like(block.scale_shift_table[...])
    block.attn2.wo.kernel[...] = jnp.zeros_like(block.attn2.wo.kernel[...])
    rng = np.random.default_rng(0)
    d = cfg.hidden_size
    x = jnp.asarray(rng.normal(size=(1, 8, d)), jnp.float32)
    ctx = jnp.asarray(rng.normal(size=(1, 3, d)), jnp.float32)
    cos, sin = rope_tables(grid_positions(2, 2, 2), cfg.rope_split, 1e4)
    mod = rng.normal(size=(1, 6, d)).astype(np.float32) * 3
    mod[:, [2, 5]] = 0.0
    y = block(x, ctx, jnp.ones((1, 3), bool), jnp.asarray(mod), cos, sin)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-6)
    mod2 = mod.copy()
    mod2[:, 2] = 1.0  # gate_msa on: the self-attention branch now changes the output
    y2 = block(x, ctx, jnp.ones((1, 3), bool), jnp.asarray(mod2), cos, sin)
    assert float(jnp.abs(y2 - x).max()) > 1e-3
    mod3 = mod.copy()
    mod3[:, 5] = 1.0  # gate_mlp on
    y3 = block(x, ctx, jnp.ones((1, 3), bool), jnp.asarray(mod3), cos, sin)
    assert float(jnp.abs(y3 - x).max()) > 1e-3


def test_cross_attention_mask_keeps_clip_tokens_and_first_valid_llm_tokens():
    cfg = _tiny_cfg()
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(4))
    inputs = _inputs(cfg, llm=6, clip=3)  # mask: 3 CLIP + 4 valid LLM tokens
    base = model(**inputs)
    # Changing LLM tokens past the valid count changes nothing.
    changed = dict(inputs)
    enc = np.asarray(inputs["encoder_hidden_states"]).copy()
    enc[:, 4:] += 10.0
    changed["encoder_hidden_states"] = jnp.asarray(enc)
    np.testing.assert_allclose(np.asarray(model(**changed)), np.asarray(base), atol=1e-6)
    # The mask is only counted: a pattern with the same number of ones (here with the CLIP part
    # zeroed) keeps the same first keys, so CLIP tokens are always attended.
    m = np.zeros(np.asarray(inputs["encoder_attention_mask"]).shape, np.float32)
    m[:, 2:9] = 1.0
    assert m.sum(1).tolist() == np.asarray(inputs["encoder_attention_mask"]).sum(1).tolist() == [7.0, 7.0]
    np.testing.assert_allclose(
        np.asarray(model(**dict(inputs, encoder_attention_mask=jnp.asarray(m)))), np.asarray(base), atol=1e-6
    )
    # And the CLIP states always matter.
    clip_changed = dict(inputs)
    clip_changed["encoder_hidden_states_2"] = inputs["encoder_hidden_states_2"] + 1.0
    assert float(jnp.abs(model(**clip_changed) - base).max()) > 1e-4


def test_bad_inputs_raise_value_errors_naming_shapes():
    cfg = _tiny_cfg()
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(5))
    good = _inputs(cfg)
    cases = [
        (
            dict(hidden_states=jnp.zeros((2, 2, 5, 4, 4))),
            r"hidden_states must be \(batch, frames, 4, height, width\); got \(2, 2, 5, 4, 4\)",
        ),
        (dict(condition_hidden_states=None), r"needs condition latents of shape"),
        (
            dict(condition_hidden_states=jnp.zeros((2, 2, 4, 4, 2))),
            r"condition_hidden_states must have the shape of hidden_states \(2, 2, 4, 4, 4\); got \(2, 2, 4, 4, 2\)",
        ),
        (dict(motion_score=None), r"needs motion_score"),
        (
            dict(encoder_attention_mask=jnp.ones((2, 8))),
            r"encoder_attention_mask must be \(2, 9\) \(CLIP tokens \+ LLM tokens\); got \(2, 8\)",
        ),
        (
            dict(encoder_hidden_states=jnp.zeros((2, 6, 15))),
            r"encoder_hidden_states must be \(2, tokens, 16\); got \(2, 6, 15\)",
        ),
    ]
    for change, msg in cases:
        kw = dict(good)
        kw.update(change)
        with pytest.raises(ValueError, match=msg):
            model(**kw)
    t2v = StepVideoDiT(_tiny_cfg(use_additional_conditions=False), rngs=nnx.Rngs(5))
    with pytest.raises(ValueError, match="takes no condition latents"):
        t2v(**good)


# ---------------------------------------------------------------------------------------- converter
def test_converter_names_missing_unexpected_and_misshaped_keys(fixture_prefix, tmp_path):
    from safetensors.numpy import load_file

    prefix = fixture_prefix("dit_t2v")
    cfg = json.load(open(prefix + ".json"))["config"]
    W = load_file(prefix + ".weights.safetensors")
    missing = {k: v for k, v in W.items() if k != "transformer_blocks.1.attn2.wkv.weight"}
    with pytest.raises(ConversionError, match=r"missing layers \[1\]"):
        load_dit(missing, cfg)
    extra = dict(W, **{"transformer_blocks.0.attn1.bogus.weight": np.zeros(3, np.float32)})
    with pytest.raises(ConversionError, match=r"unexpected key transformer_blocks\.0\.attn1\.bogus\.weight"):
        load_dit(extra, cfg)
    bad = dict(W, **{"proj_out.weight": np.zeros((8, 255), np.float32)})
    with pytest.raises(
        ConversionError,
        match=r"key proj_out\.weight: shape \(8, 255\) -> \(255, 8\) after transform, but parameter 'proj_out\.kernel' expects \(256, 8\)",
    ):
        load_dit(bad, cfg)
    no_top = {k: v for k, v in W.items() if k != "scale_shift_table"}
    with pytest.raises(ConversionError, match="missing parameters: scale_shift_table"):
        load_dit(no_top, cfg)


def test_released_folder_layout_with_sharded_bf16_index(fixture_prefix, tmp_path):
    """A `transformer/` folder (config.json + 2 shards + index, bf16) loads into a ready model."""
    import ml_dtypes
    from safetensors.numpy import load_file

    prefix = fixture_prefix("dit_t2v")
    meta = json.load(open(prefix + ".json"))
    W = load_file(prefix + ".weights.safetensors")
    folder = tmp_path / "transformer"
    folder.mkdir()
    keys = sorted(W)
    shards = {
        "diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
        "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2],
    }
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: W[k].astype(ml_dtypes.bfloat16) for k in ks}, str(folder / name))
        weight_map.update({k: name for k in ks})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(meta["config"]))
    model = load_dit(str(folder))
    assert model.cfg.num_layers == 2 and not model.cfg.use_additional_conditions
    ref = load_dit({k: W[k].astype(ml_dtypes.bfloat16).astype(np.float32) for k in W}, meta["config"])
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(ref, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    os.remove(folder / "diffusion_pytorch_model-00002-of-00002.safetensors")
    with pytest.raises(
        ConversionError, match="shard diffusion_pytorch_model-00002-of-00002.safetensors is listed but missing"
    ):
        load_dit(str(folder))
