"""Motion score: 0 when static, linear in the speed of a translating pattern, resolution-independent."""

import json
import os

import cv2
import numpy as np
import pytest

from stepvideo_jax.motion import SAMPLE_EVERY, WORK_SHORT_SIDE, motion_score, motion_score_from_frames
from stepvideo_jax.tools.motion_scores import score_folder


def _texture(size: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth random periodic texture (uint8 gray), so that flow is well defined everywhere."""
    noise = np.random.default_rng(seed).random((size, size))
    freq = np.fft.fftfreq(size)
    gauss = np.exp(-2 * (np.pi * 4.0) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))  # sigma 4 px, periodic
    tex = np.real(np.fft.ifft2(np.fft.fft2(noise) * gauss))
    return ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.uint8)


def _sampled_frames(speed: float, size: int = 512, samples: int = 4) -> list[np.ndarray]:
    """Frames 0, 12, 24, ... of a pattern translating by `speed` px/frame (at `size`) down and right/2."""
    tex = _texture()
    frames = []
    for i in range(samples):
        d = int(round(speed * SAMPLE_EVERY * i))
        f = np.roll(tex, (d, d // 2), axis=(0, 1))[:size, :size]
        frames.append(np.repeat(f[..., None], 3, axis=-1))
    return frames


def _expected(speed: float, size: int = 512) -> float:
    """Displacement per sample pair in working pixels: speed * 12 * |(1, 1/2)| * 256 / size."""
    return speed * SAMPLE_EVERY * np.hypot(1.0, 0.5) * WORK_SHORT_SIDE / size


def test_static_video_scores_zero():
    frames = _sampled_frames(0.0)
    assert motion_score_from_frames(frames) < 0.01  # vs ~1.7 for the slowest motion below


def test_score_is_linear_in_speed():
    speeds = [0.25, 0.5, 1.0, 2.0]
    scores = np.array([motion_score_from_frames(_sampled_frames(s)) for s in speeds])
    expected = np.array([_expected(s) for s in speeds])
    np.testing.assert_allclose(scores, expected, rtol=0.05)
    # Linear through the origin: score / speed is constant.
    ratios = scores / np.array(speeds)
    assert ratios.max() / ratios.min() < 1.05


@pytest.mark.parametrize("speed", [0.5, 1.5])
def test_score_matches_across_resolutions(speed):
    frames = _sampled_frames(speed, size=600)
    full = motion_score_from_frames(frames)
    for side in (360, 256):
        small = [cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in frames]
        assert abs(motion_score_from_frames(small) - full) <= 0.10 * full


def test_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 sampled frames"):
        motion_score_from_frames(_sampled_frames(1.0, samples=1))


def _write_video(path: str, speed: float, frames: int = 37, size: int = 256) -> None:
    tex = _texture()
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25, (size, size))
    assert writer.isOpened()
    for i in range(frames):
        d = int(round(speed * i))
        f = np.roll(tex, (d, 0), axis=(0, 1))[:size, :size]
        writer.write(np.repeat(f[..., None], 3, axis=-1))
    writer.release()


def test_cli_scores_folder_into_manifest(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_video(str(videos / "slow.avi"), 0.5)
    _write_video(str(videos / "fast.avi"), 1.0)
    (videos / "broken.mp4").write_bytes(b"not a video")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"video": "videos/slow.avi", "caption": "a slow pattern", "extra": 1}) + "\n")

    counts = score_folder(str(videos), str(manifest))
    assert counts == {"scored": 2, "failed": 1, "added": 2}
    rows = {r["video"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert set(rows) == {"videos/slow.avi", "videos/fast.avi", "videos/broken.mp4"}
    assert rows["videos/slow.avi"]["caption"] == "a slow pattern" and rows["videos/slow.avi"]["extra"] == 1
    assert "motion_score" not in rows["videos/broken.mp4"]
    slow, fast = rows["videos/slow.avi"]["motion_score"], rows["videos/fast.avi"]["motion_score"]
    # 256 px video = working size: 0.5 px/frame * 12 frames = 6 working px per pair (MJPG-compressed).
    assert slow == pytest.approx(6.0, rel=0.1) and fast == pytest.approx(12.0, rel=0.1)
    assert fast / slow == pytest.approx(2.0, rel=0.05)
    assert motion_score(os.path.join(videos, "fast.avi")) == pytest.approx(fast, abs=1e-3)
