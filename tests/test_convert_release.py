"""convert_torch_weights.py: released folder -> Orbax + manifest -> restore, and every failure mode."""

import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from release_layout import TOKENIZER_FILES, build_release, write_shards
from safetensors.numpy import load_file, save_file

from stepvideo_jax.checkpoint import CONVERTER_VERSION, read_manifest
from stepvideo_jax.components import COMPONENTS, convert_release, restore_component, tokenizer_dir
from stepvideo_jax.convert.core import ConversionError
from stepvideo_jax.convert.release import open_weights
from stepvideo_jax.parity.fixtures import load_fixture
from stepvideo_jax.tools import parity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The parity checker of each component and the loader it calls (patched to hand it the restored model).
CHECKERS = {
    "transformer": ("stepvideo_jax.parity.dit", "load_dit"),
    "vae": ("stepvideo_jax.parity.vae", "load_vae"),
    "step_llm": ("stepvideo_jax.parity.text", "load_step_llm"),
    "hunyuan_clip": ("stepvideo_jax.parity.text", "load_hunyuan_clip"),
}


def _leftovers(parent, dst_name):
    return [n for n in os.listdir(parent) if n.startswith(f".{dst_name}.")]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, fixture_prefix):
    """The four fixtures as a released folder (sharded DiT and Step-LLM with indexes), converted once."""
    root = tmp_path_factory.mktemp("release")
    src, dst = str(root / "stepvideo-ti2v"), str(root / "converted")
    prefixes = build_release(src, fixture_prefix)
    manifest = convert_release(src, dst, dtype="float32")
    return src, dst, prefixes, manifest


# ------------------------------------------------------------------------------------ round trip
def _params(model):
    from flax import nnx

    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# component -> (config class, the key-table function the parity tool's loader runs)
DIRECT = {
    "transformer": ("stepvideo_jax.dit:DiTConfig", "stepvideo_jax.convert.dit:convert_dit"),
    "vae": ("stepvideo_jax.vae:VAEConfig", "stepvideo_jax.convert.vae:convert_vae"),
    "step_llm": ("stepvideo_jax.text:StepLLMConfig", "stepvideo_jax.convert.step_llm:convert_step_llm"),
    "hunyuan_clip": ("stepvideo_jax.text:ClipConfig", "stepvideo_jax.convert.clip:convert_hunyuan_clip"),
}


def _resolve(ref):
    import importlib

    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_round_trip_restores_exactly_the_directly_loaded_model(converted, name):
    """convert -> restore gives the model the parity tool's loader builds from the fixture's
    safetensors: the same config, every parameter bit-identical (so every output is too)."""
    from stepvideo_jax.convert.core import TensorSource

    _, dst, prefixes, _ = converted
    fx = load_fixture(prefixes[name])
    config_class, convert_fn = map(_resolve, DIRECT[name])
    cfg = config_class.from_release(fx.config)
    restored = restore_component(dst, name)
    assert restored.cfg == cfg
    ref = convert_fn(TensorSource(fx.weights_path), cfg)
    ours = _params(restored)
    assert sorted(ours) == sorted(ref)
    for k in ref:
        assert ours[k].dtype == ref[k].dtype == np.float32, k
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


@pytest.mark.parametrize("name", ["step_llm"])
def test_round_trip_parity_tool_outputs(converted, name, monkeypatch):
    """The parity tool's checker run on the restored model: outputs identical to the direct load's
    and within the parity bound of the release's (Step-LLM: cheap enough to run twice here; for the
    others the bit-identical parameters above imply it, and their own parity tests pin the forward)."""
    import importlib

    _, dst, prefixes, _ = converted
    fx = load_fixture(prefixes[name])
    module, loader = CHECKERS[name]
    check = parity.KINDS[fx.kind]  # the checker function (it looks its loader up in its module)
    direct = check(fx)
    restored = restore_component(dst, name)
    monkeypatch.setattr(importlib.import_module(module), loader, lambda *a, **k: restored)
    via_orbax = check(fx)
    for i, (n, ours, expected) in enumerate(via_orbax):
        assert parity.compare(ours, expected)[1] <= 1e-5, f"{name}:{n}"
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(direct[i][1]), err_msg=f"{name}:{n}")


def test_manifest_records_configs_dtypes_sources_and_tokenizers(converted):
    src, dst, prefixes, manifest = converted
    assert read_manifest(dst) == manifest
    assert manifest["converter_version"] == CONVERTER_VERSION
    assert sorted(manifest["components"]) == sorted(COMPONENTS)
    dit = manifest["components"]["transformer"]
    assert dit["config"] == json.load(open(prefixes["transformer"] + ".json"))["config"]
    assert dit["dtype"] == "float32" and dit["num_params"] > 0 and dit["bytes"] == 4 * dit["num_params"]
    files = [s["file"] for s in dit["sources"]]
    assert files == [
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        *[f"transformer/diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)],
    ]
    import hashlib

    for s in dit["sources"]:
        data = open(os.path.join(src, s["file"]), "rb").read()
        assert s["bytes"] == len(data) and s["sha256"] == hashlib.sha256(data).hexdigest()
    # The VAE's config comes from vae/config.json here (the fixture's tiny one), recorded in full.
    assert manifest["components"]["vae"]["config"]["z_channels"] == 4
    for rel, data in TOKENIZER_FILES.items():
        comp = rel.split("/")[0]
        copied = os.path.join(tokenizer_dir(dst, comp), os.path.basename(rel))
        assert open(copied, "rb").read() == data
    assert manifest["components"]["transformer"]["tokenizer"] is None
    assert not _leftovers(os.path.dirname(dst), "converted")


def test_t2v_sibling_converts_in_bf16_from_the_cli(tmp_path, fixture_prefix):
    """The T2V layout (no motion embedder, 64-channel patch embed) through the CLI, bf16 output."""
    import ml_dtypes

    prefix = fixture_prefix("dit_t2v")
    src = tmp_path / "stepvideo-t2v"
    W = load_file(prefix + ".weights.safetensors")
    write_shards(
        str(src / "transformer"), "diffusion_pytorch_model", {k: v.astype(ml_dtypes.bfloat16) for k, v in W.items()}, 2
    )
    (src / "transformer" / "config.json").write_text(json.dumps(json.load(open(prefix + ".json"))["config"]))
    dst = tmp_path / "out"
    cmd = [
        sys.executable,
        "convert_torch_weights.py",
        f"--src={src}",
        f"--dst={dst}",
        "--components=transformer",
        "--dtype=bfloat16",
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    model = restore_component(str(dst), "transformer")
    assert not model.cfg.use_additional_conditions and model.motion_embedder is None
    kernel = model.blocks.attn1.wqkv.kernel[...]
    assert kernel.dtype == np.dtype(ml_dtypes.bfloat16)
    expected = W["transformer_blocks.1.attn1.wqkv.weight"].astype(ml_dtypes.bfloat16).T.reshape(kernel.shape[1:])
    np.testing.assert_array_equal(np.asarray(kernel[1]), expected)
    # The CLI refuses to overwrite, with one line naming the destination.
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and f"{dst}: destination exists; pass --overwrite" in run.stderr


# ------------------------------------------------------------------------------------ failures
def _dit_release(tmp_path, fixture_prefix):
    src = tmp_path / "release"
    build_release(str(src), fixture_prefix, components=("transformer",))
    return src, src / "transformer"


def _convert_fails(src, dst, match, components=("transformer",), exc=ConversionError):
    with pytest.raises(exc, match=match):
        convert_release(str(src), str(dst), components=list(components), dtype="float32")
    assert not os.path.exists(dst), "a partial destination was left"
    assert not _leftovers(os.path.dirname(dst), os.path.basename(dst)), "a temporary folder was left"


def test_existing_destination_needs_overwrite(tmp_path, fixture_prefix):
    src, _ = _dit_release(tmp_path, fixture_prefix)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"{dst}: destination exists; pass --overwrite"):
        convert_release(str(src), str(dst), components=["transformer"])
    assert (dst / "keep.txt").read_text() == "mine"
    convert_release(str(src), str(dst), components=["transformer"], overwrite=True)
    assert not (dst / "keep.txt").exists() and read_manifest(dst)["components"]["transformer"]["dtype"] == "bfloat16"
    assert not _leftovers(tmp_path, "out")


def test_missing_shard(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    os.remove(folder / "diffusion_pytorch_model-00002-of-00003.safetensors")
    _convert_fails(
        src,
        tmp_path / "out",
        r"index\.json: shard diffusion_pytorch_model-00002-of-00003\.safetensors is listed but missing",
    )


def test_truncated_shard(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    shard = folder / "diffusion_pytorch_model-00003-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    _convert_fails(src, tmp_path / "out", f"{shard}: not a readable safetensors file")


def _rewrite_shard(folder, key, edit, stem="diffusion_pytorch_model"):
    """Applies `edit` to the tensors of the shard holding `key`; returns that shard's path."""
    index = folder / f"{stem}.safetensors.index.json"
    name = json.loads(index.read_text())["weight_map"][key]
    tensors = load_file(str(folder / name))
    edit(tensors)
    save_file(tensors, str(folder / name))
    meta = json.loads(index.read_text())
    meta["weight_map"] = {k: v for k, v in meta["weight_map"].items() if v != name} | {k: name for k in tensors}
    index.write_text(json.dumps(meta))
    return folder / name


def test_unknown_key(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    bogus = "transformer_blocks.0.attn1.bogus.weight"
    shard = _rewrite_shard(folder, "proj_out.bias", lambda t: t.update({bogus: np.zeros(3, np.float32)}))
    _convert_fails(src, tmp_path / "out", rf"unexpected key {re.escape(bogus)} in {shard}")


def test_missing_key(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    _rewrite_shard(folder, "scale_shift_table", lambda t: t.pop("scale_shift_table"))
    _convert_fails(src, tmp_path / "out", rf"checkpoint {folder} is missing parameters: scale_shift_table")


def test_shape_mismatch(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    shard = _rewrite_shard(
        folder, "proj_out.weight", lambda t: t.update({"proj_out.weight": np.zeros((8, 255), np.float32)})
    )
    _convert_fails(
        src,
        tmp_path / "out",
        rf"key proj_out\.weight in {shard}: shape \(8, 255\) -> \(255, 8\) after transform, but parameter "
        r"'proj_out\.kernel' expects \(256, 8\)",
    )


def test_failure_in_a_later_component_removes_the_earlier_ones(tmp_path, fixture_prefix):
    src = tmp_path / "release"
    build_release(str(src), fixture_prefix, components=("transformer", "step_llm"))
    key = "transformer.layers.1.ffn_norm.weight"
    shard = _rewrite_shard(src / "step_llm", key, lambda t: t.update({key: np.ones(7, np.float32)}), stem="model")
    _convert_fails(
        src, tmp_path / "out", rf"key {re.escape(key)} in {shard}: shape \(7,\)", components=("transformer", "step_llm")
    )


def test_missing_component_and_unknown_names_fail_before_writing(tmp_path, fixture_prefix):
    src, _ = _dit_release(tmp_path, fixture_prefix)
    _convert_fails(
        src,
        tmp_path / "out",
        rf"{src}/step_llm: not found \(component 'step_llm'",
        components=("transformer", "step_llm"),
    )
    _convert_fails(src, tmp_path / "out", r"unknown components \['unet'\]", components=("unet",), exc=ValueError)


def test_bin_weights_are_read_weights_only(tmp_path, fixture_prefix, monkeypatch):
    """A `pytorch_model.bin` (HunyuanCLIP's released form) goes through torch.load(weights_only=True)."""
    prefix = fixture_prefix("hunyuan_clip")
    W = load_file(prefix + ".weights.safetensors")
    calls = []

    class FakeTensor:
        def __init__(self, a):
            self.a, self.dtype = a, "float32"

        def numpy(self):
            return self.a

    def load(path, **kwargs):
        calls.append((path, kwargs))
        return {k: FakeTensor(v) for k, v in W.items()}

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load, bfloat16="bfloat16"))
    src = tmp_path / "release"
    build_release(str(src), fixture_prefix, components=("hunyuan_clip",))
    enc = src / "hunyuan_clip" / "clip_text_encoder"
    os.remove(enc / "model.safetensors")
    (enc / "pytorch_model.bin").write_bytes(b"stand-in; the fake torch.load ignores it")
    tensors = open_weights(enc)
    assert sorted(tensors) == sorted(W)
    assert calls and all(kw.get("weights_only") is True for _, kw in calls)
    manifest = convert_release(str(src), str(tmp_path / "out"), components=["hunyuan_clip"], dtype="float32")
    assert [s["file"] for s in manifest["components"]["hunyuan_clip"]["sources"]] == [
        "hunyuan_clip/clip_text_encoder/config.json",
        "hunyuan_clip/clip_text_encoder/pytorch_model.bin",
    ]
    model = restore_component(str(tmp_path / "out"), "hunyuan_clip")
    direct = __import__("stepvideo_jax.convert.clip", fromlist=["load_hunyuan_clip"]).load_hunyuan_clip(
        prefix + ".weights.safetensors", json.load(open(prefix + ".json"))["config"]
    )
    import jax
    from flax import nnx

    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(direct, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vae_without_config_file_is_the_released_model(tmp_path):
    """The release ships no VAE config: the real model's (version 2, z 64) is recorded."""
    from stepvideo_jax.components import COMPONENTS
    from stepvideo_jax.vae import VAEConfig

    (tmp_path / "vae").mkdir()
    cfg = COMPONENTS["vae"].release.read_config(tmp_path, "vae")
    assert cfg["version"] == 2 and cfg["z_channels"] == 64
    assert VAEConfig.from_release(cfg) == VAEConfig.real()


def test_bin_without_torch_names_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(
        ConversionError, match=rf"{tmp_path / 'pytorch_model.bin'}: reading a PyTorch \.bin checkpoint needs torch"
    ):
        open_weights(tmp_path)


def test_unreadable_bin_names_the_file(tmp_path, monkeypatch):
    def load(path, **kwargs):
        assert kwargs["weights_only"] is True
        raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load, bfloat16="bfloat16"))
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(
        ConversionError,
        match=rf"{tmp_path / 'pytorch_model.bin'}: not a readable weights-only PyTorch state dict \(RuntimeError: PytorchStreamReader",
    ):
        open_weights(tmp_path / "pytorch_model.bin")
