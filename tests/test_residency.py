"""Sampling with one component resident at a time (`residency="sequential"`) gives the same video as
keeping all resident, and the weight-only quantization options at restore."""

import os

import numpy as np
import pytest

from stepvideo_jax.configs import get_config
from stepvideo_jax.diffusion import pipeline


def _config(path: str, variant: str = "", **fields):
    config = get_config(f"{path.removesuffix('.py')}:{variant}")
    for k, v in fields.items():
        config[k] = v
    return config


def _run_both(make_config, tmp_path):
    results = {}
    for residency in ("all", "sequential"):
        results[residency] = pipeline.run(make_config(residency=residency, output_dir=str(tmp_path / residency)))
    return results["all"], results["sequential"]


def _assert_identical(a, b):
    np.testing.assert_array_equal(a["result"].video, b["result"].video)
    np.testing.assert_array_equal(a["result"].latents, b["result"].latents)
    np.testing.assert_array_equal(a["result"].condition, b["result"].condition)
    with open(a["paths"]["png"], "rb") as fa, open(b["paths"]["png"], "rb") as fb:
        assert fa.read() == fb.read()


def test_sequential_residency_writes_the_same_video_tiny(tmp_path):
    tok = str(tmp_path / "tok")
    make = lambda **kw: _config("ti2v.py", "tiny", tokenizer_cache_dir=tok, progress=False, steps=2, **kw)
    all_, seq = _run_both(make, tmp_path)
    _assert_identical(all_, seq)
    assert set(seq["timings"]) >= {"text_encode_s", "image_encode_s", "denoise_s", "decode_s"}


def test_dit_quantize_restores_the_bf16_demo_checkpoint_as_int8():
    from flax import nnx

    from stepvideo_jax.components import component_loaders
    from stepvideo_jax.quantize import quantize_model, quantized_kernels

    loaders = component_loaders(_config("demo.py", dit_quantize="int8"), mesh=None)
    dit = loaders["dit"]()
    reference = quantize_model(component_loaders(_config("demo.py"), mesh=None)["dit"](), "int8")
    assert dit.cfg.quantize == "int8" and dit.cfg.param_dtype == "bfloat16"
    flat = lambda m: {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(m))}
    got, want = flat(dit), flat(reference)
    assert sorted(got) == sorted(want)
    for key in got:
        np.testing.assert_array_equal(got[key].view(np.uint8), want[key].view(np.uint8), key)
    assert got["blocks.ff.w_in.kernel"].dtype == np.int8 and len(quantized_kernels(dit)) == 10


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(residency="some"), "residency must be one of all, sequential; got 'some'"),
        (dict(dit_quantize="int4"), "dit_quantize must be one of '', 'none', 'int8', 'fp8'"),
        (dict(text_quantize="int8"), "apply to converted checkpoints; the tiny variant has none"),
    ],
)
def test_bad_memory_options_fail_in_one_line_before_loading(tmp_path, fields, message):
    config = _config("ti2v.py", "tiny", output_dir=str(tmp_path / "o"), **fields)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipeline.run(config)
    assert not os.listdir(tmp_path / "o") if os.path.isdir(tmp_path / "o") else True
