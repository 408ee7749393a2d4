"""The shipped demo checkpoint (demo/checkpoint, made by `python -m stepvideo_jax.tools.demo_recipe`)
loads through the sampler's path and re-generates the short sample stored beside it."""

import os

import numpy as np

from stepvideo_jax.checkpoint import read_manifest
from stepvideo_jax.configs import get_config
from stepvideo_jax.tools.demo_recipe import REFERENCE_SAMPLE, reference_sample_settings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo_config():
    return get_config("demo")


def test_shipped_checkpoint_is_complete_and_small():
    config = _demo_config()
    manifest = read_manifest(config.checkpoint_dir)
    assert sorted(manifest["components"]) == ["hunyuan_clip", "step_llm", "transformer", "vae"]
    assert {e["dtype"] for e in manifest["components"].values()} == {config.param_dtype}
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(config.checkpoint_dir) for f in fs)
    assert total < 12 * 2**20, f"the shipped demo checkpoint grew to {total / 2**20:.1f} MiB"
    assert os.path.isfile(config.image) and os.path.isfile(os.path.splitext(config.image)[0] + ".txt")


def test_shipped_checkpoint_reproduces_its_stored_sample(tmp_path):
    from stepvideo_jax.diffusion.pipeline import run

    config = reference_sample_settings(_demo_config())
    stored = np.load(os.path.join(config.checkpoint_dir, REFERENCE_SAMPLE))
    assert (int(stored["steps"]), int(stored["seed"]), str(stored["prompt"]), float(stored["motion_score"])) == (
        config.steps,
        config.seed,
        config.prompt,
        config.motion_score,
    )
    config.output_dir = str(tmp_path)
    out = run(config)
    result = out["result"]
    assert result.latents.shape == stored["latents"].shape and result.video.shape == stored["video"].shape
    # Float32 on CPU throughout; the slack covers another CPU's summation order, not a changed model
    # (one DiT step or a different seed moves the latents by O(0.1)).
    np.testing.assert_allclose(result.latents, stored["latents"], rtol=0, atol=2e-3)
    np.testing.assert_allclose(result.video, stored["video"], rtol=0, atol=4e-3)
    assert out["paths"] and all(os.path.isfile(p) for p in out["paths"].values())
