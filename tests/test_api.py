"""The Python API: `stepvideo_jax.TI2VPipeline` / `TextToVideoPipeline` validate every call as sample.py does,
accept a path, a PIL image or a uint8 array, return uint8 frames, and reuse compiled programs across calls."""

import os
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import stepvideo_jax
from stepvideo_jax import video_io

SIZE = dict(frames=17, height=32, width=32, steps=2)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("tok"))
    return stepvideo_jax.TI2VPipeline.from_config("ti2v:tiny", tokenizer_cache_dir=cache, progress=False)


def _backend_compiles(fn):
    """(result, number of XLA backend compilations while running fn)."""
    count = []
    listener = lambda event, duration, **kw: count.append(event) if "backend_compile" in event else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return result, len(count)


def test_import_is_light():
    code = "import sys, stepvideo_jax; print(sorted(m for m in ('stepvideo_jax.api', 'gradio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_second_call_reuses_compiled_programs_and_image_forms_agree(pipe, tmp_path):
    image = np.zeros((40, 48, 3), np.uint8)
    image[8:24, 10:30] = (200, 30, 30)
    path = str(tmp_path / "first.png")
    Image.fromarray(image).save(path)

    first, n_first = _backend_compiles(lambda: pipe(image=path, prompt="a red box", seed=3, **SIZE))
    second, n_second = _backend_compiles(lambda: pipe(image=Image.open(path), prompt="a red box", seed=3, **SIZE))
    assert n_first > 0 and n_second == 0, (n_first, n_second)
    third = pipe(image=image, prompt="a red box", seed=3, **SIZE)
    assert first.frames.dtype == np.uint8 and first.frames.shape == (17, 32, 32, 3)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.frames, third.frames)
    assert {"text_encode_s", "image_encode_s", "denoise_s", "decode_s", "total_s"} <= set(first.timings)

    paths = first.save(str(tmp_path / "out" / "clip.mp4"))
    np.testing.assert_array_equal(video_io.read_mp4(paths["mp4"]).shape, first.frames.shape)
    for p in paths.values():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~_umask()


def test_new_prompt_after_a_cached_negative_compiles_nothing(pipe):
    """The second video's negative prompt is cached, so only its new prompt is encoded: with the same
    encoder batch as the first call (padded), not a newly compiled batch-1 program."""
    pipe(image="synthetic", prompt="a green ball", seed=1, **SIZE)
    out, n = _backend_compiles(lambda: pipe(image="synthetic", prompt="a blue ball rolls away", seed=2, **SIZE))
    assert n == 0, n
    assert out.frames.shape == (17, 32, 32, 3)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cfg=float("nan")), "cfg (guidance scale) must be a finite number"),
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(motion_score=-1.0), "motion_score must be a finite number >= 0"),
        (dict(image="/nonexistent.png"), "does not exist"),
        (dict(image=np.zeros((8, 8), np.uint8)), "uint8 [height, width, 3] array"),
        (dict(image=None), "image is required"),
        (dict(guidance=3.0), "unexpected argument 'guidance'"),
    ],
)
def test_every_call_is_validated(pipe, kwargs, message):
    kwargs = {"image": "synthetic", "prompt": "x", **SIZE, **kwargs}
    with pytest.raises(ValueError, match=None) as e:
        pipe(**kwargs)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_constructors_reject_wrong_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown config field 'stepz'; did you mean steps"):
        stepvideo_jax.TI2VPipeline.from_config("ti2v:tiny", stepz=3)
    with pytest.raises(ValueError, match="does not exist"):
        stepvideo_jax.TI2VPipeline.from_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="use_additional_conditions=False"):
        stepvideo_jax.TextToVideoPipeline.from_config("ti2v:tiny")


def test_text_to_video(tmp_path):
    pipe = stepvideo_jax.TextToVideoPipeline.from_config("t2v:tiny", tokenizer_cache_dir=str(tmp_path), progress=False)
    out = pipe(prompt="waves", **SIZE)
    assert out.frames.shape == (17, 32, 32, 3) and out.frames.dtype == np.uint8
    with pytest.raises(ValueError, match="text-to-video takes no image"):
        pipe.generate("synthetic", prompt="x")
