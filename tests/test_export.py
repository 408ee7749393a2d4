"""Train -> sample: a trained network written over a base checkpoint folder becomes a folder the sampler
reads (the trained component as trained, the others as in the base), and a network that does not fit
the base's others is refused before anything is written."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax import components
from stepvideo_jax.api import DEMO_CHECKPOINT
from stepvideo_jax.checkpoint import read_manifest
from stepvideo_jax.dit import StepVideoDiT
from stepvideo_jax.tools.export import export_components


def _params(model):
    return {
        ".".join(map(str, p)): np.asarray(v.get_value() if hasattr(v, "get_value") else v.value)
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def test_export_replaces_one_component_and_keeps_the_others(tmp_path):
    dit = components.restore_component(DEMO_CHECKPOINT, "transformer")
    graphdef, state = nnx.split(dit)
    trained = nnx.merge(graphdef, jax.tree.map(lambda x: x + 1, state))  # stands in for a training run
    out = str(tmp_path / "exported")
    export_components(DEMO_CHECKPOINT, out, {"transformer": trained})
    assert sorted(read_manifest(out)["components"]) == sorted(components.COMPONENTS)
    got, want = _params(components.restore_component(out, "transformer")), _params(trained)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k].astype(np.float32), want[k].astype(np.float32), err_msg=k)
    got_vae = _params(components.restore_component(out, "vae"))
    for k, v in _params(components.restore_component(DEMO_CHECKPOINT, "vae")).items():
        np.testing.assert_array_equal(got_vae[k], v, err_msg=k)
    assert components.tokenizer_dir(out, "step_llm")


def test_a_network_that_does_not_fit_the_base_is_refused(tmp_path):
    cfg = components.component_config(DEMO_CHECKPOINT, "transformer")
    wrong = nnx.eval_shape(lambda: StepVideoDiT(dataclasses.replace(cfg, caption_channels=(16, 12)), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"caption_channels \(16, 12\) do not match the text encoders' widths"):
        export_components(DEMO_CHECKPOINT, str(tmp_path / "x"), {"transformer": wrong})
    assert not (tmp_path / "x").exists()
