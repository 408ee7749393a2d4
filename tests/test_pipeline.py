"""The sampling pipeline end to end on the tiny config, and its input validation."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stepvideo_jax import video_io
from stepvideo_jax.configs import get_config
from stepvideo_jax.diffusion import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, variant: str, **fields):
    config = get_config(f"{name}:{variant}")
    for k, v in fields.items():
        config[k] = v
    return config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("videos")
    config = _config(
        "ti2v",
        "tiny",
        output_dir=str(out),
        tokenizer_cache_dir=str(tmp_path_factory.mktemp("tok")),
        progress=False,
        steps=3,
        prompt="a cat walks",
    )
    return config, pipeline.run(config)


def test_tiny_end_to_end_writes_the_video(tiny_run):
    config, out = tiny_run
    mp4, png = out["paths"]["mp4"], out["paths"]["png"]
    assert os.path.basename(mp4) == "a_cat_walks-seed1234.mp4"
    frames = video_io.read_mp4(mp4)
    assert frames.shape == (17, 64, 96, 3)  # 17 frames (3 latent frames) at 64x96
    decoded = video_io.to_uint8(out["result"].video)
    assert decoded.shape == frames.shape
    # Codec error only. A random-weight decoder draws pixel-scale patterns that H.264 (crf 25, 4:2:0
    # chroma) smooths, so compare 8x8 block means (what the codec keeps) tightly and pixels loosely.
    blocks = lambda x: x.astype(float).reshape(8, 8, 12, 8, 3).mean((1, 3))
    block_err = np.abs(blocks(frames[0]) - blocks(decoded[0])).mean()
    assert block_err < 4.0, f"frame 0's 8x8 block means differ from the decoded frame's by {block_err:.2f}/255"
    pixel_err = np.abs(frames[0].astype(float) - decoded[0]).mean()
    mismatch = np.abs(frames[0].astype(float) - np.roll(decoded[0], 32, axis=1)).mean()
    assert pixel_err < 0.5 * mismatch, (pixel_err, mismatch)
    preview = np.asarray(Image.open(png))
    assert preview.shape == (64, 192, 3)  # first | last frame
    np.testing.assert_array_equal(preview[:, :96], decoded[0])
    np.testing.assert_array_equal(preview[:, 96:], decoded[-1])


def test_tiny_end_to_end_latents_and_condition(tiny_run):
    config, out = tiny_run
    result = out["result"]
    assert result.latents.shape == (1, 3, 4, 6, config.tiny.z_channels)
    assert np.all(np.isfinite(result.latents))
    # The image condition is one latent frame followed by zeros.
    assert np.any(result.condition[:, 0] != 0) and np.all(result.condition[:, 1:] == 0)
    assert out["timings"]["dit_evals"] == 2 * 3  # [conditional | unconditional] rows x 3 steps, no caching


def test_second_run_does_not_overwrite(tiny_run):
    config, out = tiny_run
    settings = pipeline.SampleSettings.from_config(config)
    again = pipeline.save_video(out["result"].video, settings)
    assert os.path.basename(again["mp4"]) == "a_cat_walks-seed1234-2.mp4"
    assert os.path.getsize(out["paths"]["mp4"]) > 0


def _bad_cases(tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00not an image")
    afile = tmp_path / "a_file"
    afile.write_text("x")
    ok = dict(image=str(image))
    return [
        ("tiny", dict(image=str(tmp_path / "nope.png")), "does not exist"),
        ("tiny", dict(image=str(garbage)), "not a readable image"),
        ("tiny", dict(ok, frames=16), "frames must be an integer >= 17"),
        ("tiny", dict(ok, height=8), "height must be an integer >= 16"),
        ("tiny", dict(ok, width=15), "width must be an integer >= 16"),
        ("tiny", dict(ok, steps=0), "steps must be an integer >= 1"),
        ("tiny", dict(ok, motion_score=-1.0), "motion_score must be a finite number >= 0"),
        ("tiny", dict(ok, motion_score=math.nan), "motion_score must be a finite number >= 0"),
        ("tiny", dict(ok, cfg=math.inf), "cfg"),
        ("tiny", dict(ok, cfg=-2.0), "cfg"),
        ("tiny", dict(ok, guidance_interval=(0.7, 0.2)), "guidance_interval must satisfy"),
        ("tiny", dict(ok, output_dir=str(afile)), "is a file"),
        ("", dict(ok, checkpoint_dir=str(tmp_path / "no_ckpt")), "python convert_torch_weights.py --src="),
    ]


def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path):
    for variant, fields, message in _bad_cases(tmp_path):
        out_dir = fields.get("output_dir", str(tmp_path / "out"))
        config = _config("ti2v", variant, **{"output_dir": out_dir, **fields})
        before = sorted(os.listdir(tmp_path))
        with pytest.raises(ValueError) as e:
            pipeline.run(config)
        assert message in str(e.value) and "\n" not in str(e.value), (fields, str(e.value))
        assert sorted(os.listdir(tmp_path)) == before, fields  # nothing created


def test_t2v_config_takes_no_image(tmp_path):
    config = _config("t2v", "tiny", output_dir=str(tmp_path / "o"), image="x.png")
    with pytest.raises(ValueError, match="takes no image"):
        pipeline.SampleSettings.from_config(config)
    settings = pipeline.SampleSettings.from_config(_config("t2v", "tiny", output_dir=str(tmp_path / "o")))
    assert not settings.ti2v and settings.motion_score is None and pipeline.prepare_image(settings) is None


def test_sizes_round_down_as_released(tmp_path):
    config = _config("ti2v", "tiny", output_dir=str(tmp_path), frames=40, height=70, width=100)
    s = pipeline.SampleSettings.from_config(config)
    assert (s.frames, s.height, s.width) == (34, 64, 96)
    assert pipeline.latent_grid(s.frames, s.height, s.width) == (6, 4, 6)
    assert pipeline.latent_grid(102, 544, 992) == (18, 34, 62)
    from stepvideo_jax.vae import VAEConfig

    assert pipeline.latent_grid(102, 544, 992, VAEConfig.real()) == (18, 34, 62)
    three_levels = VAEConfig(
        z_channels=8,
        encoder_ch=8,
        encoder_ch_mult=(1, 2, 4),
        decoder_ch=8,
        decoder_ch_mult=(1, 2, 4),
        encoder_temporal_down_layers=(0, 1),
        decoder_temporal_up_layers=(1, 2),
        num_res_blocks=1,
        norm_groups=2,
    )
    assert pipeline.latent_grid(34, 64, 96, three_levels) == (6, 8, 12)  # the demo VAE's 8x spatial factor


def test_sample_cli_reports_bad_input_in_one_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "sample.py",
            "--config=configs/ti2v.py:tiny",
            "--config.steps=0",
            f"--config.output_dir={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "error: steps must be an integer >= 1; got 0", proc.stderr[-2000:]
    assert not out.exists()
