"""Step-LLM: parity with the released model, other head counts, the converter, memory shape, sizes."""

import json

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from text_reference import random_step_llm_weights, slopes_reference, step_llm_forward, step_llm_release_config

from stepvideo_jax.convert import ConversionError
from stepvideo_jax.convert.step_llm import convert_step_llm, load_step_llm
from stepvideo_jax.text import StepLLM, StepLLMConfig
from stepvideo_jax.text.step_llm import alibi_slopes, sqrt_alibi_causal_bias
from stepvideo_jax.tools import parity


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_parity_with_release_fixture(fixture_prefix):
    results = {n: rel for n, _, rel in parity.check_fixture(fixture_prefix("step_llm"))}
    assert results["output"] <= 1e-5, results


def _write_fixture(prefix, cfg, weights, input_ids, mask, output):
    with open(str(prefix) + ".json", "w") as f:
        json.dump({"kind": "step_llm", "config": cfg, "call": {}}, f)
    save_file(weights, str(prefix) + ".weights.safetensors")
    save_file(
        {
            "input_ids": input_ids.astype(np.int64),
            "attention_mask": mask.astype(np.int64),
            "output": output.astype(np.float32),
        },
        str(prefix) + ".io.safetensors",
    )


@pytest.mark.parametrize(
    "heads,groups",
    [(3, 1), (5, 5)],  # not powers of two (the odd-k slopes), a single KV group, one group per head
)
def test_parity_tool_on_other_head_counts(tmp_path, capsys, heads, groups):
    cfg = step_llm_release_config(hidden=8 * heads, heads=heads, groups=groups, ffn=200)  # ffn rounds up to 256
    weights = random_step_llm_weights(cfg, seed=heads)
    rng = np.random.default_rng(heads)
    ids = rng.integers(0, cfg["padded_vocab_size"], (2, 13))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 2  # padded with EOS, as the tokenizer does
    expected = step_llm_forward(weights, cfg, ids)
    prefix = tmp_path / f"step_llm_h{heads}_g{groups}"
    _write_fixture(prefix, cfg, weights, ids, mask, expected)
    assert parity.check_prefixes([str(prefix)]) == 0
    line = capsys.readouterr().out.strip()
    rel = float(line.split("rel_l2=")[1].split()[0])
    assert line.endswith(" ok") and ":output " in line and rel <= 1e-5, line


def test_query_heads_use_group_i_div_r():
    """Zeroing the values of KV group 1 changes only query heads 2 and 3 (4 heads in 2 groups)."""
    cfg = step_llm_release_config(hidden=16, heads=4, groups=2, layers=1, vocab=16)
    graphdef, state = nnx.split(load_step_llm(random_step_llm_weights(cfg), cfg).layers)
    attention = nnx.merge(graphdef, jax.tree.map(lambda a: a[0], state)).attention
    attention.wo.kernel[...] = jnp.eye(16).reshape(4, 4, 16)  # output = heads concatenated
    x = jax.random.normal(jax.random.key(0), (1, 5, 16))
    bias = sqrt_alibi_causal_bias(4, 5)
    run = nnx.jit(lambda module, x, bias: module(x, bias))  # one compile for both calls
    base = run(attention, x, bias).reshape(1, 5, 4, 4)  # [B, L, H, hd]
    attention.wkv.kernel[...] = attention.wkv.kernel[...].at[:, 1, 4:].set(0.0)  # group 1: [k | v], v zeroed
    changed = run(attention, x, bias).reshape(1, 5, 4, 4)
    np.testing.assert_array_equal(np.asarray(changed[:, :, :2]), np.asarray(base[:, :, :2]))
    np.testing.assert_array_equal(np.asarray(changed[:, :, 2:]), 0.0)


def test_slopes_formula():
    assert np.allclose(alibi_slopes(8), [2.0**-k for k in range(1, 9)])
    assert np.allclose(alibi_slopes(6), [2.0 ** (-2 * k) for k in range(1, 5)] + [2.0**-1, 2.0**-3])
    for h in (1, 3, 5, 12, 48):
        assert np.allclose(alibi_slopes(h), slopes_reference(h)), h


def test_bias_is_causal_sqrt_alibi():
    bias = np.asarray(sqrt_alibi_causal_bias(3, 4))
    slopes = alibi_slopes(3)
    assert np.isneginf(bias[:, 0, 1:]).all() and np.isneginf(bias[:, 2, 3]).all()
    assert np.allclose(bias[:, 3, 0], -slopes * np.sqrt(3.0)) and np.allclose(bias[:, 2, 2], 0.0)


def test_padding_mask_not_applied_and_causal():
    """As released: the mask does not change the output, and a token never sees later tokens."""
    cfg = step_llm_release_config(hidden=16, heads=2, groups=1, layers=2, vocab=32)
    model = load_step_llm(random_step_llm_weights(cfg), cfg)
    ids = jnp.asarray([[1, 5, 9, 2, 2, 2]] * 2 + [[1, 5, 9, 2, 7, 2]])  # row 2: a later token changed
    mask = jnp.asarray([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    out = np.asarray(model(ids, mask))  # one call: every eager call of a scanned model compiles anew
    np.testing.assert_array_equal(out[1], out[0])
    np.testing.assert_allclose(out[2, :4], out[0, :4], rtol=1e-6, atol=1e-6)
    assert np.abs(out[2, 4:] - out[0, 4:]).max() > 1e-4


def test_attention_materialises_at_most_b_heads_l_l():
    """No intermediate larger than the [B, H, L, L] logits of one layer (and the [H, L, L] bias is
    built once, outside the layer scan)."""
    cfg = StepLLMConfig(hidden_size=16, num_heads=4, num_groups=2, ffn_hidden_size=256, num_layers=3, vocab_size=32)
    b, n = 2, 96
    graphdef, state = nnx.split(nnx.eval_shape(lambda: StepLLM(cfg, rngs=nnx.Rngs(0))))
    jaxpr = jax.make_jaxpr(lambda s, ids: nnx.merge(graphdef, s)(ids))(state, jnp.zeros((b, n), jnp.int32))
    limit = b * cfg.num_heads * n * n
    largest, sqrt_in_scan = 0, False

    def walk(jx, in_scan):
        nonlocal largest, sqrt_in_scan
        for eqn in jx.eqns:
            for var in eqn.outvars:
                largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
            sqrt_in_scan |= in_scan and eqn.primitive.name == "sqrt"
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub, in_scan or eqn.primitive.name == "scan")

    walk(jaxpr.jaxpr, False)
    assert largest <= limit, (largest, limit)
    assert not sqrt_in_scan  # the ALiBi bias is shared by all layers, not rebuilt per layer


def test_bf16_weights_run():
    cfg = step_llm_release_config(hidden=16, heads=2, groups=1, layers=1, vocab=16)
    weights = random_step_llm_weights(cfg)
    model = load_step_llm(weights, cfg, param_dtype="bfloat16", dtype="bfloat16")
    assert model.layers.attention.wq.kernel[...].dtype == jnp.bfloat16
    out = model(jnp.asarray([[1, 3, 4, 2]]))
    ref = step_llm_forward(weights, cfg, np.asarray([[1, 3, 4, 2]]))
    assert out.dtype == jnp.bfloat16 and rel_l2(out, ref) < 3e-2


def test_converter_errors_name_the_key():
    cfg = step_llm_release_config(hidden=16, heads=2, groups=1, layers=2, vocab=16)
    weights = random_step_llm_weights(cfg)
    scfg = StepLLMConfig.from_release(cfg)
    bad = dict(weights)
    bad["transformer.layers.1.attention.wqkv.weight"] = bad["transformer.layers.1.attention.wqkv.weight"][:-8]
    with pytest.raises(ConversionError, match=r"transformer\.layers\.1\.attention\.wqkv\.weight"):
        convert_step_llm(bad, scfg)
    missing = {k: v for k, v in weights.items() if k != "transformer.layers.0.ffn_norm.weight"}
    with pytest.raises(ConversionError, match="missing layers"):
        convert_step_llm(missing, scfg)
    extra = dict(weights, **{"lm_head.weight": np.zeros((16, 16), np.float32)})
    with pytest.raises(ConversionError, match="lm_head.weight"):
        convert_step_llm(extra, scfg)


def test_sharded_index_loading(tmp_path):
    """A folder with config.json + sharded safetensors + index, as released (9 shards there)."""
    cfg = step_llm_release_config(hidden=16, heads=2, groups=1, layers=2, vocab=16)
    weights = random_step_llm_weights(cfg)
    keys = sorted(weights)
    shards = {f"model-0000{i + 1}-of-00003.safetensors": keys[i::3] for i in range(3)}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: weights[k] for k in ks}, str(tmp_path / name))
        weight_map.update({k: name for k in ks})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = load_step_llm(tmp_path)
    ids = np.asarray([[1, 7, 3, 2]])
    assert rel_l2(model(jnp.asarray(ids)), step_llm_forward(weights, cfg, ids)) <= 1e-5


def test_real_size_and_logical_axes():
    cfg = StepLLMConfig()
    abstract = nnx.eval_shape(lambda: StepLLM(cfg, rngs=nnx.Rngs(0)))
    params = nnx.state(abstract, nnx.Param)
    total = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    assert abs(total - 19.6e9) < 0.1e9, total
    names = {".".join(map(str, p)): v.get_metadata().get("out_sharding") for p, v in nnx.to_flat_state(params)}
    assert names["layers.attention.wq.kernel"] == ("layers", "embed", "heads", "kv")
    assert names["layers.attention.wkv.kernel"] == ("layers", "embed", "kv_heads", "kv")
    assert names["layers.feed_forward.w_gate.kernel"] == ("layers", "embed", "mlp")
    assert names["tok_embeddings.embedding"] == ("vocab", "embed")
    assert StepLLMConfig.from_release(cfg.to_release()) == cfg
