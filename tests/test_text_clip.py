"""HunyuanCLIP (BERT): parity with the released model, key forms, file forms, the torch error path."""

import builtins
import json
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from stepvideo_jax.convert import ConversionError
from stepvideo_jax.convert.clip import TORCH_INSTALL_HINT, load_hunyuan_clip, read_torch_bin
from stepvideo_jax.parity.fixtures import load_fixture
from stepvideo_jax.text import ClipConfig
from stepvideo_jax.tools import parity


def test_parity_with_release_fixture(fixture_prefix, capsys):
    assert parity.check_prefixes([fixture_prefix("hunyuan_clip")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rels = {line.split(":")[-1].split()[0]: float(line.split("rel_l2=")[1].split()[0]) for line in lines}
    assert set(rels) == {"last_hidden_state", "pooler_output"} and max(rels.values()) <= 1e-5, lines


@pytest.fixture(scope="module")
def clip_fixture(fixture_prefix):
    fx = load_fixture(fixture_prefix("hunyuan_clip"))
    return fx, load_file(fx.weights_path)


def _run(model, fx):
    return model(jnp.asarray(fx.tensor("input_ids")), jnp.asarray(fx.tensor("attention_mask")))


def test_bert_prefix_buffers_and_release_folder(clip_fixture, tmp_path):
    """`bert.`-prefixed keys plus the position_ids buffer, from a hunyuan_clip/clip_text_encoder folder."""
    fx, weights = clip_fixture
    prefixed = {"bert." + k: v for k, v in weights.items()}
    prefixed["bert.embeddings.position_ids"] = np.arange(fx.config["max_position_embeddings"])[None]
    folder = tmp_path / "hunyuan_clip" / "clip_text_encoder"
    folder.mkdir(parents=True)
    save_file(prefixed, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(fx.config))
    last, pooled = _run(load_hunyuan_clip(tmp_path / "hunyuan_clip"), fx)
    assert parity.compare(last, fx.tensor("last_hidden_state"))[1] <= 1e-5
    assert parity.compare(pooled, fx.tensor("pooler_output"))[1] <= 1e-5


def test_key_errors(clip_fixture):
    fx, weights = clip_fixture
    both = dict(weights, **{"bert.pooler.dense.bias": weights["pooler.dense.bias"]})
    with pytest.raises(ConversionError, match="with and without the 'bert.' prefix"):
        load_hunyuan_clip(both, fx.config)
    missing = {k: v for k, v in weights.items() if k != "encoder.layer.1.output.dense.bias"}
    with pytest.raises(ConversionError, match="missing layers"):
        load_hunyuan_clip(missing, fx.config)
    heads = dict(weights, **{"cls.predictions.bias": np.zeros(120, np.float32)})
    with pytest.raises(ConversionError, match="cls.predictions.bias"):
        load_hunyuan_clip(heads, fx.config)


def test_bin_without_torch_says_how_to_install(clip_fixture, tmp_path, monkeypatch):
    fx, _ = clip_fixture
    folder = tmp_path / "clip_text_encoder"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    (folder / "config.json").write_text(json.dumps(fx.config))
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match=r"pip install 'stepvideo-jax\[torch\]'"):
        load_hunyuan_clip(folder)
    with pytest.raises(ImportError, match="torch"):
        read_torch_bin(folder / "pytorch_model.bin")
    assert TORCH_INSTALL_HINT == "pip install 'stepvideo-jax[torch]'"


def test_bin_is_read_with_weights_only(clip_fixture, tmp_path, monkeypatch):
    """The .bin path through a stand-in torch module: weights_only=True, on CPU, keys as stored."""
    fx, weights = clip_fixture
    calls = {}

    class FakeTensor:
        dtype = "float32"

        def __init__(self, array):
            self._array = array

        def numpy(self):
            return self._array

    def fake_load(file, map_location=None, weights_only=False):
        calls.update(map_location=map_location, weights_only=weights_only)
        return {"bert." + k: FakeTensor(v) for k, v in weights.items()}

    fake_torch = types.ModuleType("torch")
    fake_torch.bfloat16, fake_torch.load = "bfloat16", fake_load
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    folder = tmp_path / "clip_text_encoder"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"stand-in")
    (folder / "config.json").write_text(json.dumps(fx.config))
    model = load_hunyuan_clip(tmp_path)
    assert calls == {"map_location": "cpu", "weights_only": True}
    np.testing.assert_array_equal(np.asarray(model.pooler.kernel[...]), weights["pooler.dense.weight"].T)
    np.testing.assert_array_equal(
        np.asarray(model.layers.attention.query.kernel[...][1]).reshape(64, 64),
        weights["encoder.layer.1.attention.self.query.weight"].T,
    )


def test_bin_with_torch(clip_fixture, tmp_path):
    torch = pytest.importorskip("torch")
    fx, weights = clip_fixture
    folder = tmp_path / "clip_text_encoder"
    folder.mkdir()
    torch.save({"bert." + k: torch.from_numpy(v) for k, v in weights.items()}, str(folder / "pytorch_model.bin"))
    (folder / "config.json").write_text(json.dumps(fx.config))
    last, _ = _run(load_hunyuan_clip(folder), fx)
    assert parity.compare(last, fx.tensor("last_hidden_state"))[1] <= 1e-5


def test_padding_mask_is_applied(clip_fixture):
    """Unlike the Step-LLM, BERT masks padded keys: changing a padded token leaves valid rows alone."""
    fx, weights = clip_fixture
    model = load_hunyuan_clip(weights, fx.config)
    ids = jnp.asarray(fx.tensor("input_ids"))
    mask = jnp.asarray(fx.tensor("attention_mask"))
    both, _ = model(jnp.concatenate([ids, ids.at[1, -1].set(7)]), jnp.concatenate([mask, mask]))  # one call
    valid = int(mask[1].sum())
    np.testing.assert_allclose(np.asarray(both[3, :valid]), np.asarray(both[1, :valid]), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(both[3, valid:] - both[1, valid:]).max()) > 1e-3


def test_config_from_release(clip_fixture):
    fx, _ = clip_fixture
    cfg = ClipConfig.from_release(fx.config)
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.max_length) == (64, 2, 4, 77)
    assert ClipConfig.from_release(cfg.to_release()) == cfg
    with pytest.raises(ValueError, match="hidden_act"):
        ClipConfig.from_release(dict(fx.config, hidden_act="relu"))
    real = ClipConfig()
    assert (real.hidden_size, real.num_layers, real.num_heads, real.intermediate_size, real.vocab_size) == (
        1024,
        24,
        16,
        4096,
        47020,
    )
