"""restore_component: straight into mesh shardings, and refusing a config or dtype the manifest lacks."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx
from release_layout import build_release

from stepvideo_jax.checkpoint import read_manifest, write_manifest
from stepvideo_jax.components import abstract_component, component_config, convert_release, restore_component


@pytest.fixture(scope="module")
def dit_ckpt(tmp_path_factory, fixture_prefix):
    root = tmp_path_factory.mktemp("ckpt")
    build_release(str(root / "release"), fixture_prefix, components=("transformer",))
    convert_release(str(root / "release"), str(root / "out"), components=["transformer"], dtype="float32")
    return root / "out"


def _flat(model):
    return {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_restore_goes_straight_into_mesh_shardings(dit_ckpt):
    from stepvideo_jax.dit import DIT_SHARDING
    from stepvideo_jax.sharding import MeshConfig, make_mesh, model_shardings

    mesh = make_mesh(MeshConfig.parse("fsdp=4,tensor=2"))
    sharded = restore_component(dit_ckpt, "transformer", mesh=mesh)
    single = restore_component(dit_ckpt, "transformer")
    abstract, _ = abstract_component(dit_ckpt, "transformer")
    expected = {
        ".".join(map(str, p)): s
        for p, s in nnx.to_flat_state(model_shardings(nnx.state(abstract, nnx.Param), mesh, DIT_SHARDING))
    }
    got, ref = _flat(sharded), _flat(single)
    assert sorted(got) == sorted(expected) == sorted(ref)
    split = 0
    for k, a in got.items():
        assert a.sharding == expected[k], k
        np.testing.assert_array_equal(np.asarray(a), np.asarray(ref[k]), err_msg=k)
        assert ref[k].sharding == jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        split += a.addressable_shards[0].data.size < a.size
    # Each device holds only its part of the sharded weights (e.g. the stacked wqkv kernel).
    wqkv = got["blocks.attn1.wqkv.kernel"]
    assert wqkv.addressable_shards[0].data.shape == (2, 256 // 4, 2 // 2, 3 * 128)
    assert split >= len(got) // 2


def test_restore_rejects_a_different_config_or_dtype(dit_ckpt):
    cfg = component_config(dit_ckpt, "transformer")
    assert cfg.param_dtype == "float32" and cfg.num_layers == 2
    with pytest.raises(ValueError, match=r"different config: num_layers: checkpoint 2, requested 3"):
        restore_component(dit_ckpt, "transformer", config=dataclasses.replace(cfg, num_layers=3))
    with pytest.raises(ValueError, match=r"param_dtype: checkpoint 'float32', requested 'bfloat16'"):
        restore_component(dit_ckpt, "transformer", config=dataclasses.replace(cfg, param_dtype="bfloat16"))
    with pytest.raises(ValueError, match=r"converted to float32, but bfloat16 was requested"):
        restore_component(dit_ckpt, "transformer", dtype="bfloat16")
    # Runtime fields are the caller's to choose.
    model = restore_component(
        dit_ckpt, "transformer", config=dataclasses.replace(cfg, remat_policy="full"), dtype="float32"
    )
    assert model.cfg.remat_policy == "full"


def test_restore_checks_stored_arrays_against_the_manifest(dit_ckpt, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(dit_ckpt, ckpt)
    manifest = read_manifest(ckpt)
    entry = manifest["components"]["transformer"]
    entry["dtype"] = "bfloat16"
    write_manifest(ckpt, manifest)
    with pytest.raises(ValueError, match=r"params: parameter \S+ is stored as float32, the manifest says bfloat16"):
        restore_component(ckpt, "transformer")
    entry["dtype"] = "float32"
    entry["config"]["num_layers"] = 3
    write_manifest(ckpt, manifest)
    with pytest.raises(ValueError, match=r"is stored with shape \(2, [\d, ]+\), the manifest's config gives \(3, "):
        restore_component(ckpt, "transformer")


def test_restore_errors_name_what_is_missing(dit_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"no component 'vae' in the manifest \(has transformer\)"):
        restore_component(dit_ckpt, "vae")
    with pytest.raises(ValueError, match=r"unknown component 'unet'"):
        restore_component(dit_ckpt, "unet")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json: not found"):
        restore_component(tmp_path, "transformer")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a stepvideo-jax manifest"):
        restore_component(tmp_path, "transformer")
