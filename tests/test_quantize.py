"""Weight-only int8 / fp8 quantization: the kernel quantizer, the error against the release fixtures,
the converter's --quantize, restore-time quantization, and scale shardings."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from release_layout import build_release

from stepvideo_jax.checkpoint import read_manifest
from stepvideo_jax.components import convert_release, restore_component, save_components
from stepvideo_jax.convert.dit import load_dit
from stepvideo_jax.convert.step_llm import load_step_llm
from stepvideo_jax.layers import QuantizedDense
from stepvideo_jax.layers.quantized import quantize_kernel
from stepvideo_jax.parity.dit import fixture_inputs
from stepvideo_jax.parity.fixtures import load_fixture
from stepvideo_jax.quantize import quantize_model, quantized_kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Relative L2 error of the output with quantized weights vs the release's float32 output, measured on
# the shared fixtures (int8: DiT 0.95%, Step-LLM 2.5%; fp8 e4m3 keeps 3 mantissa bits: DiT 3.2%).
DIT_INT8_TOL = 1.5e-2
DIT_FP8_TOL = 5e-2
LLM_INT8_TOL = 3e-2


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _flat(model):
    return {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# ------------------------------------------------------------------------------------ the quantizer
@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_per_output_channel_scales_and_rounding(mode):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 16, 3, 5)).astype(np.float32)  # [layers, in, *out]
    w[1, :, 2, 4] = 0.0  # an all-zero output channel keeps scale 1 (no division by zero)
    q, s = quantize_kernel(w, 1, mode, leading=1)
    assert q.dtype == (np.int8 if mode == "int8" else ml_dtypes.float8_e4m3fn) and s.shape == (2, 3, 5)
    qmax = 127.0 if mode == "int8" else 448.0
    np.testing.assert_allclose(s[0], np.abs(w[0]).max(axis=0) / qmax, rtol=1e-6)
    assert s[1, 2, 4] == 1.0 and np.all(q[1, :, 2, 4].astype(np.float32) == 0)
    # Each channel's largest weight maps to +-qmax exactly; dequantized error is within half a step
    # (int8) or half an e4m3 ulp (3 mantissa bits: 2^-4 relative).
    assert np.abs(q.astype(np.float32)).max(axis=1)[0].min() == qmax
    deq = q.astype(np.float32) * s[:, None]
    if mode == "int8":
        assert np.all(np.abs(deq - w) <= s[:, None] / 2 + 1e-7)
    else:
        assert np.all(np.abs(deq - w) <= np.abs(w) * 2.0**-4 + s[:, None] * 2.0**-9)
    # The jax path (restore-time quantization on the devices) gives the same bits as NumPy (conversion).
    qj, sj = jax.jit(lambda x: quantize_kernel(x, 1, mode, leading=1))(jnp.asarray(w))
    np.testing.assert_array_equal(np.asarray(qj).view(np.uint8), q.view(np.uint8))
    np.testing.assert_array_equal(np.asarray(sj), s)


def test_quantized_dense_matches_dequantized_linear_general():
    """x @ (q * scale) computed as (x @ q) * scale, over two contracted axes (the `wo` layout)."""
    layer = QuantizedDense(
        (3, 4),
        6,
        mode="int8",
        names=("heads", "kv", "embed"),
        axis=(-2, -1),
        use_bias=True,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    )
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 4, 6)).astype(np.float32)
    q, s = quantize_kernel(w, 2, "int8")
    layer.kernel.set_value(jnp.asarray(q))
    layer.scale.set_value(jnp.asarray(s))
    layer.bias.set_value(jnp.arange(6, dtype=jnp.float32))
    x = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
    expected = np.einsum("bnhd,hde->bne", x, q.astype(np.float32) * s) + np.arange(6)
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)
    assert layer.scale.get_metadata()["out_sharding"] == ("embed",)


# ------------------------------------------------------------------------------------ measured error
@pytest.fixture(scope="module")
def dit_fixture(fixture_prefix):
    fx = load_fixture(fixture_prefix("dit_ti2v"))
    return fx, load_dit(fx.weights_path, fx.config)


def _forward(model, inputs):
    return nnx.jit(lambda m, kw: m(**kw))(model, inputs)  # one compile instead of op-by-op dispatch


def test_dit_fixture_error_with_quantized_weights(dit_fixture):
    fx, model = dit_fixture
    inputs, expected = fixture_inputs(fx), fx.tensor("output")
    for mode, tol in (("int8", DIT_INT8_TOL), ("fp8", DIT_FP8_TOL)):
        err = rel_l2(_forward(quantize_model(model, mode), inputs), expected)
        assert 1e-4 < err <= tol, (mode, err)  # quantized (not the float path), and within the stated tolerance
    assert rel_l2(_forward(model, inputs), expected) <= 1e-5  # the float model is untouched
    kernels = quantized_kernels(quantize_model(model, "int8"))
    assert "blocks.ff.w_in.kernel" in kernels and "adaln.kernel" in kernels and "proj_out.kernel" not in kernels
    assert kernels["blocks.attn1.wo.kernel"].leading == 1 and kernels["blocks.attn1.wo.kernel"].num_in_axes == 2


def test_step_llm_fixture_error_with_int8_weights(fixture_prefix):
    fx = load_fixture(fixture_prefix("step_llm"))
    model = load_step_llm(fx.weights_path, fx.config)
    qmodel = quantize_model(model, "int8")
    out = qmodel(jnp.asarray(fx.tensor("input_ids")), jnp.asarray(fx.tensor("attention_mask")))
    mask = fx.tensor("attention_mask").astype(bool)  # padding states are never used downstream
    err = rel_l2(np.asarray(out)[mask], fx.tensor("output")[mask])
    assert 1e-4 < err <= LLM_INT8_TOL, err
    assert sorted(quantized_kernels(qmodel)) == [
        f"layers.{n}.kernel"
        for n in (
            "attention.wkv",
            "attention.wo",
            "attention.wq",
            "feed_forward.w2",
            "feed_forward.w_gate",
            "feed_forward.w_up",
        )
    ]


def test_quantize_refuses_other_modes_and_models(dit_fixture):
    _, model = dit_fixture
    with pytest.raises(ValueError, match="unknown quantize mode 'int4'; expected one of none, int8, fp8"):
        quantize_model(model, "int4")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(quantize_model(model, "int8"), "int8")


# ------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def releases(tmp_path_factory, fixture_prefix):
    """The DiT and Step-LLM fixtures as a released folder, converted float32 and int8 (via the CLI)."""
    root = tmp_path_factory.mktemp("quant")
    src = root / "release"
    build_release(str(src), fixture_prefix, components=("transformer", "step_llm"))
    convert_release(str(src), str(root / "float"), components=["transformer", "step_llm"], dtype="float32")
    cmd = [
        sys.executable,
        "convert_torch_weights.py",
        f"--src={src}",
        f"--dst={root / 'int8'}",
        "--components=transformer,step_llm",
        "--dtype=float32",
        "--quantize=int8",
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(int8 linears)" in run.stdout
    return root / "float", root / "int8"


@pytest.mark.parametrize("name", ["transformer", "step_llm"])
def test_converted_int8_restores_into_mesh_shardings_and_equals_restore_time_quantization(releases, name):
    from stepvideo_jax.components import component_config
    from stepvideo_jax.dit import DIT_SHARDING as DIT_RULES
    from stepvideo_jax.sharding import MeshConfig, make_mesh, model_shardings
    from stepvideo_jax.text import TEXT_SHARDING as TEXT_RULES

    float_dir, int8_dir = releases
    entry = read_manifest(int8_dir)["components"][name]
    assert entry["config"]["quantize"] == "int8" and entry["dtype"] == "float32"
    assert "quantize" not in read_manifest(float_dir)["components"][name]["config"]

    mesh = make_mesh(MeshConfig.parse("fsdp=4,tensor=2"))
    converted = restore_component(int8_dir, name, mesh=mesh)
    assert converted.cfg.quantize == "int8"
    # Restore-time quantization of the float checkpoint, asked for by the config's `quantize` field.
    cfg = dataclasses.replace(component_config(float_dir, name), quantize="int8")
    at_restore = restore_component(float_dir, name, mesh=mesh, config=cfg)
    in_memory = quantize_model(restore_component(float_dir, name), "int8")
    rules = DIT_RULES if name == "transformer" else TEXT_RULES
    expected = {
        ".".join(map(str, p)): s
        for p, s in nnx.to_flat_state(model_shardings(nnx.state(converted, nnx.Param), mesh, rules))
    }
    a, b, c = _flat(converted), _flat(at_restore), _flat(in_memory)
    assert sorted(a) == sorted(b) == sorted(c) == sorted(expected)
    for key in a:
        assert a[key].sharding == expected[key] and b[key].sharding == expected[key], key
        for other in (b, c):
            np.testing.assert_array_equal(np.asarray(a[key]).view(np.uint8), np.asarray(other[key]).view(np.uint8), key)
    kernels = quantized_kernels(converted)
    for k in kernels.values():
        assert a[k.kernel].dtype == jnp.int8 and a[k.scale].dtype == jnp.float32
    # The scales of the stacked, FSDP/tensor-sharded kernels are split too (not replicated).
    scale = "blocks.ff.w_in.scale" if name == "transformer" else "layers.feed_forward.w_gate.scale"
    assert a[scale].addressable_shards[0].data.size < a[scale].size


def test_quantized_scales_are_named_by_the_rules_tables():
    from stepvideo_jax.dit import DIT_SHARDING as DIT_RULES
    from stepvideo_jax.dit import DiTConfig, StepVideoDiT
    from stepvideo_jax.text import TEXT_SHARDING as TEXT_RULES
    from stepvideo_jax.text import StepLLM, StepLLMConfig

    dit = nnx.eval_shape(
        lambda: StepVideoDiT(
            DiTConfig(
                num_heads=2, head_dim=16, num_layers=2, rope_split=(8, 4, 4), caption_channels=(32, 16), quantize="fp8"
            ),
            rngs=nnx.Rngs(0),
        )
    )
    llm = nnx.eval_shape(
        lambda: StepLLM(
            StepLLMConfig(
                hidden_size=32,
                num_heads=4,
                num_groups=2,
                ffn_hidden_size=64,
                num_layers=2,
                vocab_size=64,
                quantize="int8",
            ),
            rngs=nnx.Rngs(0),
        )
    )
    for model, rules in ((dit, DIT_RULES), (llm, TEXT_RULES)):
        known = {n for n, _ in rules.params}
        for k in quantized_kernels(model).values():
            var = dict(nnx.to_flat_state(nnx.state(model)))[tuple(_path(k.scale))]
            names = var.get_metadata()["out_sharding"]
            assert len(names) == len(var.shape) and set(names) - {None} <= known, (k.scale, names)


def _path(key):
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def test_save_components_keeps_quantized_dtypes(dit_fixture, tmp_path):
    _, model = dit_fixture
    q = quantize_model(model, "fp8")
    manifest = save_components(tmp_path / "ckpt", {"transformer": (q, None)}, source="test", param_dtype="bfloat16")
    entry = manifest["components"]["transformer"]
    assert entry["dtype"] == "bfloat16" and entry["config"]["quantize"] == "fp8"
    restored = restore_component(tmp_path / "ckpt", "transformer")
    got = _flat(restored)
    assert (
        got["blocks.attn1.wqkv.kernel"].dtype == jnp.float8_e4m3fn
        and got["blocks.attn1.wqkv.scale"].dtype == jnp.float32
    )
    assert got["proj_out.kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(got["blocks.attn1.wqkv.kernel"]).view(np.uint8),
        np.asarray(_flat(q)["blocks.attn1.wqkv.kernel"]).view(np.uint8),
    )
