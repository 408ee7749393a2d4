"""Image reading / cover-resize-crop, uint8 conversion, MP4 + PNG writing and safe output naming."""

import os

import numpy as np
import pytest
from PIL import Image

from stepvideo_jax import video_io


def test_read_image_maps_to_minus_one_one(tmp_path):
    rgb = np.array([[[0, 255, 51]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = video_io.read_image(str(tmp_path / "a.png"))
    assert out.shape == (1, 1, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [-1.0, 1.0, 51 / 127.5 - 1], atol=1e-6)


def test_read_image_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        video_io.read_image(str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="not a readable image") as e:
        video_io.read_image(str(tmp_path / "bad.png"))
    assert "\n" not in str(e.value)


def test_cover_resize_crop_centre_crops_the_long_side():
    # 100x200 to 100x100: the height fits exactly (scale 1), the width is cropped to columns 50..149.
    cols = np.broadcast_to(np.arange(200, dtype=np.float32)[None, :, None], (100, 200, 3)) / 200.0
    out = video_io.cover_resize_crop(np.ascontiguousarray(cols), 100, 100)
    assert out.shape == (100, 100, 3)
    np.testing.assert_allclose(out[0, :, 0], np.arange(50, 150) / 200.0, atol=1e-6)


def test_cover_resize_crop_scales_to_cover():
    img = np.full((30, 50, 3), 0.25, np.float32)
    for h, w in [(16, 16), (64, 32), (60, 100), (48, 160)]:
        out = video_io.cover_resize_crop(img, h, w)
        assert out.shape == (h, w, 3)
        np.testing.assert_allclose(out, 0.25, atol=1e-6)  # a constant image stays constant
    # Antialiased downscaling: a 1-pixel checkerboard halved averages to grey away from the borders
    # (plain bilinear sampling would alias it to 0 or 1).
    checker = (np.indices((8, 8)).sum(0) % 2).astype(np.float32)[..., None].repeat(3, -1)
    np.testing.assert_allclose(video_io.cover_resize_crop(checker, 4, 4)[1:-1, 1:-1], 0.5, atol=1e-6)


def test_to_uint8_matches_release_rounding():
    x = np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0], np.float32)
    np.testing.assert_array_equal(video_io.to_uint8(x), np.array([0, 0, 127, 254, 255, 255], np.uint8))


def test_crop_standard_540p():
    frames = np.zeros((2, 544, 992, 3), np.uint8)
    assert video_io.crop_standard_540p(frames).shape == (2, 540, 960, 3)
    assert video_io.crop_standard_540p(np.zeros((2, 992, 544, 3), np.uint8)).shape == (2, 960, 540, 3)
    assert video_io.crop_standard_540p(np.zeros((2, 64, 96, 3), np.uint8)).shape == (2, 64, 96, 3)


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("a cat, walking!", "a_cat_walking-seed7"),
        ("../../etc/passwd", "etc_passwd-seed7"),
        ("", "video-seed7"),
        ("笑起来", "笑起来-seed7"),
        ("x" * 80, "x" * 50 + "-seed7"),
    ],
)
def test_output_stem_is_a_plain_name(prompt, expected):
    stem = video_io.output_stem(prompt, 7)
    assert stem == expected
    assert os.sep not in stem and ".." not in stem


def test_reserve_never_overwrites(tmp_path):
    (tmp_path / "clip-seed1.mp4").write_bytes(b"keep me")
    first = video_io.reserve_output_paths(str(tmp_path), "clip-seed1", [".mp4", ".png"])
    assert [os.path.basename(p) for p in first] == ["clip-seed1-2.mp4", "clip-seed1-2.png"]
    second = video_io.reserve_output_paths(str(tmp_path), "clip-seed1", [".mp4", ".png"])
    assert [os.path.basename(p) for p in second] == ["clip-seed1-3.mp4", "clip-seed1-3.png"]
    assert (tmp_path / "clip-seed1.mp4").read_bytes() == b"keep me"
    with pytest.raises(ValueError):
        video_io.reserve_output_paths(str(tmp_path), "../evil", [".mp4"])


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    for bad in [tmp_path / "f", tmp_path / "f" / "sub"]:
        with pytest.raises(ValueError, match="is a file"):
            video_io.check_output_dir(str(bad))


@pytest.mark.parametrize("denoise", [False, True])
def test_mp4_round_trip(tmp_path, denoise):
    rng = np.random.default_rng(0)
    base = video_io.to_uint8(video_io.synthetic_image(48, 80))
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(9)])  # [9, 48, 80, 3]
    frames = np.clip(frames.astype(int) + rng.integers(-2, 3, frames.shape), 0, 255).astype(np.uint8)
    path = video_io.write_mp4(str(tmp_path / "v.mp4"), frames, denoise=denoise)
    back = video_io.read_mp4(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(float) - frames).mean() < 8.0  # codec error only
    assert sorted(os.listdir(tmp_path)) == ["v.mp4"]  # no temporary files left behind


def test_png_and_frame_checks(tmp_path):
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    path = video_io.write_png(str(tmp_path / "p.png"), img)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
    with pytest.raises(ValueError, match="even height/width"):
        video_io.write_mp4(str(tmp_path / "odd.mp4"), np.zeros((2, 5, 6, 3), np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["p.png"]
