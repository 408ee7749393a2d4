"""convert_torch_weights.py: released folder -> Orbax + manifest -> restore, and every failure mode."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from release_layout import TOKENIZER_FILES, build_release, write_shards
from stepvideo_jax.checkpoint import CONVERTER_VERSION, read_manifest, restore_component, tokenizer_dir
from stepvideo_jax.convert.core import ConversionError
from stepvideo_jax.convert.release import COMPONENTS, convert_release, open_weights
from stepvideo_jax.tools import parity
from stepvideo_jax.tools.fixtures import load_fixture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The parity checker of each component and the loader it calls (patched to hand it the restored model).
CHECKERS = {
    "transformer": ("stepvideo_jax.dit.parity", "load_dit"),
    "vae": ("stepvideo_jax.vae.parity", "load_vae"),
    "step_llm": ("stepvideo_jax.text.parity", "load_step_llm"),
    "hunyuan_clip": ("stepvideo_jax.text.parity", "load_hunyuan_clip"),
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
@pytest.mark.parametrize("name", list(COMPONENTS))
def test_round_trip_matches_loading_safetensors_directly(converted, name, monkeypatch):
    """convert -> restore -> the parity tool's outputs equal (bit for bit) those of the direct load."""
    import importlib

    _, dst, prefixes, _ = converted
    fx = load_fixture(prefixes[name])
    module, loader = CHECKERS[name]
    check = getattr(importlib.import_module(module), parity.KINDS[fx.kind].split(":")[1])
    direct = check(fx)
    restored = restore_component(dst, name)
    monkeypatch.setattr(importlib.import_module(module), loader, lambda *a, **k: restored)
    via_orbax = check(fx)
    assert [n for n, _, _ in via_orbax] == [n for n, _, _ in direct]
    for (n, ours, expected), (_, ref, _) in zip(via_orbax, direct):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref), err_msg=f"{name}:{n}")
        assert parity.compare(ours, expected)[1] <= 1e-5, f"{name}:{n}"


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
    write_shards(str(src / "transformer"), "diffusion_pytorch_model", {k: v.astype(ml_dtypes.bfloat16) for k, v in W.items()}, 2)
    (src / "transformer" / "config.json").write_text(json.dumps(json.load(open(prefix + ".json"))["config"]))
    dst = tmp_path / "out"
    cmd = [sys.executable, "convert_torch_weights.py", f"--src={src}", f"--dst={dst}", "--components=transformer", "--dtype=bfloat16"]
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
    _convert_fails(src, tmp_path / "out", r"index\.json: shard diffusion_pytorch_model-00002-of-00003\.safetensors is listed but missing")


def test_truncated_shard(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    shard = folder / "diffusion_pytorch_model-00003-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    _convert_fails(src, tmp_path / "out", f"{shard}: not a readable safetensors file")


def _rewrite_shard(folder, edit):
    """Applies `edit` to shard 1's tensors and rewrites it and the index."""
    name = "diffusion_pytorch_model-00001-of-00003.safetensors"
    tensors = load_file(str(folder / name))
    edit(tensors)
    save_file(tensors, str(folder / name))
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    meta = json.loads(index.read_text())
    meta["weight_map"] = {k: v for k, v in meta["weight_map"].items() if v != name} | {k: name for k in tensors}
    index.write_text(json.dumps(meta))
    return folder / name, sorted(tensors)


def test_unknown_key(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    shard, _ = _rewrite_shard(folder, lambda t: t.update({"transformer_blocks.0.attn1.bogus.weight": np.zeros(3, np.float32)}))
    _convert_fails(src, tmp_path / "out", rf"unexpected key transformer_blocks\.0\.attn1\.bogus\.weight in {shard}")


def test_missing_key(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    _, keys = _rewrite_shard(folder, lambda t: t.pop("scale_shift_table"))
    assert "scale_shift_table" not in keys
    _convert_fails(src, tmp_path / "out", rf"checkpoint {folder} is missing parameters: scale_shift_table")


def test_shape_mismatch(tmp_path, fixture_prefix):
    src, folder = _dit_release(tmp_path, fixture_prefix)
    shard, _ = _rewrite_shard(folder, lambda t: t.update({"proj_out.weight": np.zeros((8, 255), np.float32)}))
    _convert_fails(src, tmp_path / "out", rf"key proj_out\.weight in {shard}: shape \(8, 255\) -> \(255, 8\) after transform, but parameter 'proj_out\.kernel' expects \(256, 8\)")


def test_failure_in_a_later_component_removes_the_earlier_ones(tmp_path, fixture_prefix):
    src = tmp_path / "release"
    build_release(str(src), fixture_prefix, components=("transformer", "vae"))
    vae = src / "vae" / "vae_v2.safetensors"
    tensors = load_file(str(vae))
    tensors["encoder.conv_in.conv.weight"] = tensors["encoder.conv_in.conv.weight"][:1]
    save_file(tensors, str(vae))
    _convert_fails(src, tmp_path / "out", rf"key encoder\.conv_in\.conv\.weight in {vae}: shape", components=("transformer", "vae"))


def test_missing_component_and_unknown_names_fail_before_writing(tmp_path, fixture_prefix):
    src, _ = _dit_release(tmp_path, fixture_prefix)
    _convert_fails(src, tmp_path / "out", rf"{src}/step_llm: not found \(component 'step_llm'", components=("transformer", "step_llm"))
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
