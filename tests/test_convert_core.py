"""The converter core on a toy table: dtype casts as tensors are read, sharded indexes, and errors
that name the key, the file and the shapes."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from stepvideo_jax.convert.core import ConversionError, Rule, TensorSource, convert, linear

RULES = [
    Rule(r"blocks\.(?P<layer>\d+)\.w", "blocks.w.kernel", linear),
    Rule(r"head\.weight", "head.kernel", linear),
    Rule(r"head\.bias", "head.bias"),
]
TARGETS = {
    "blocks.w.kernel": ((3, 4, 2), np.dtype(np.float32)),  # 3 stacked layers of torch (2, 4) weights
    "head.kernel": ((2, 5), np.dtype(np.float32)),
    "head.bias": ((5,), np.dtype(np.float32)),
}


def _tensors(dtype=np.float32):
    rng = np.random.default_rng(0)
    t = {f"blocks.{i}.w": rng.normal(size=(2, 4)) for i in range(3)}
    t["head.weight"] = rng.normal(size=(5, 2))
    t["head.bias"] = rng.normal(size=(5,))
    return {k: v.astype(dtype) for k, v in t.items()}


def _sharded(tmp_path, tensors, shards=2):
    keys = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        name = f"m-{i + 1}.safetensors"
        save_file({k: tensors[k] for k in keys[i::shards]}, str(tmp_path / name))
        weight_map.update({k: name for k in keys[i::shards]})
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return weight_map


def test_sharded_bf16_source_converts_exactly_into_contiguous_target_arrays(tmp_path):
    src = _tensors(ml_dtypes.bfloat16)
    _sharded(tmp_path, src, shards=3)
    out = convert(TensorSource(tmp_path), RULES, TARGETS, stacked_prefixes=("blocks.",))
    assert sorted(out) == sorted(TARGETS)
    for name, (shape, dtype) in TARGETS.items():
        assert out[name].shape == shape and out[name].dtype == dtype and out[name].flags.c_contiguous
    for i in range(3):
        np.testing.assert_array_equal(out["blocks.w.kernel"][i], src[f"blocks.{i}.w"].astype(np.float32).T)
    np.testing.assert_array_equal(out["head.kernel"], src["head.weight"].astype(np.float32).T)


def test_dtype_argument_casts_each_tensor_as_it_is_read():
    src = _tensors(np.float32)
    out = convert(src, RULES, TARGETS, stacked_prefixes=("blocks.",), dtype=np.dtype(ml_dtypes.bfloat16))
    assert {a.dtype for a in out.values()} == {np.dtype(ml_dtypes.bfloat16)}
    np.testing.assert_array_equal(out["head.kernel"], src["head.weight"].T.astype(ml_dtypes.bfloat16))
    # float32 requested for bfloat16 targets (a falsy np.dtype must still count as given).
    bf16_targets = {k: (s, np.dtype(ml_dtypes.bfloat16)) for k, (s, _) in TARGETS.items()}
    out = convert(src, RULES, bf16_targets, stacked_prefixes=("blocks.",), dtype=np.dtype(np.float32))
    assert {a.dtype for a in out.values()} == {np.dtype(np.float32)}


def test_errors_name_the_file_the_key_and_the_shapes(tmp_path):
    src = _tensors()
    src["blocks.1.w"] = np.zeros((2, 3), np.float32)
    src["extra.weight"] = np.zeros(1, np.float32)
    weight_map = _sharded(tmp_path, {k: v for k, v in src.items() if k != "extra.weight"})
    shard = tmp_path / weight_map["blocks.1.w"]
    with pytest.raises(
        ConversionError,
        match=rf"key blocks\.1\.w in {shard}: shape \(2, 3\) -> \(3, 2\) after transform, but parameter 'blocks\.w\.kernel' expects \(4, 2\)",
    ):
        convert(TensorSource(tmp_path), RULES, TARGETS, stacked_prefixes=("blocks.",))
    save_file({"extra.weight": src["extra.weight"]}, str(tmp_path / "single.safetensors"))
    with pytest.raises(
        ConversionError, match=rf"unexpected key extra\.weight in {tmp_path / 'single.safetensors'}: no conversion rule"
    ):
        convert(TensorSource(tmp_path / "single.safetensors"), RULES, TARGETS, stacked_prefixes=("blocks.",))


def test_missing_duplicate_and_out_of_range_layers():
    src = _tensors()
    del src["blocks.2.w"]
    with pytest.raises(ConversionError, match=r"parameter 'blocks\.w\.kernel': checkpoint is missing layers \[2\]"):
        convert(src, RULES, TARGETS, stacked_prefixes=("blocks.",))
    src = dict(_tensors(), **{"blocks.3.w": np.zeros((2, 4), np.float32)})
    with pytest.raises(ConversionError, match=r"key blocks\.3\.w: layer 3 out of range for 3 layers"):
        convert(src, RULES, TARGETS, stacked_prefixes=("blocks.",))
    src = {k: v for k, v in _tensors().items() if k != "head.bias"}
    with pytest.raises(ConversionError, match=r"checkpoint is missing parameters: head\.bias"):
        convert(src, RULES, TARGETS, stacked_prefixes=("blocks.",))


def test_index_that_disagrees_with_its_shards(tmp_path):
    weight_map = _sharded(tmp_path, _tensors())
    index = tmp_path / "m.safetensors.index.json"
    moved = dict(
        weight_map,
        **{"head.bias": "m-1.safetensors" if weight_map["head.bias"] == "m-2.safetensors" else "m-2.safetensors"},
    )
    index.write_text(json.dumps({"weight_map": moved}))
    with pytest.raises(
        ConversionError, match=rf"{index}: key head\.bias is listed in m-\d\.safetensors but not stored there"
    ):
        TensorSource(tmp_path)
    index.write_text(json.dumps({"not_a_weight_map": {}}))
    with pytest.raises(ConversionError, match=rf"{index}: malformed index"):
        TensorSource(tmp_path)
