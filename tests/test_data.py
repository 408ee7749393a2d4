"""Manifest, clip decoding, buckets and the grain pipeline (skips counted, exact iterator restore)."""

import json

import cv2
import numpy as np
import pytest

from stepvideo_jax.data import (
    DataConfig,
    SkipItem,
    choose_bucket,
    make_dataset,
    parse_buckets,
    read_clip,
    read_manifest,
    resize_center_crop,
)


def _write_video(path, frames: int, height: int, width: int, seed: int = 0) -> None:
    """A moving square on a coloured background (MJPG .avi)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (width, height))
    assert writer.isOpened()
    color = np.random.default_rng(seed).integers(0, 255, 3).tolist()
    for i in range(frames):
        f = np.full((height, width, 3), 30, np.uint8)
        cv2.rectangle(f, (i % width, height // 4), (i % width + 8, height // 4 + 8), color, -1)
        writer.write(f)
    writer.release()


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory):
    """6 usable videos in two aspect buckets + one unreadable, one too short, one without caption."""
    root = tmp_path_factory.mktemp("videos")
    rows = []
    for i in range(6):
        h, w = (40, 40) if i % 2 == 0 else (40, 64)
        _write_video(root / f"v{i}.avi", 20, h, w, seed=i)
        rows.append({"video": f"v{i}.avi", "caption": f"square {i}", "motion_score": float(i)})
    (root / "broken.avi").write_bytes(b"garbage")
    rows.append({"video": "broken.avi", "caption": "broken"})
    _write_video(root / "short.avi", 10, 40, 40)
    rows.append({"video": "short.avi", "caption": "short"})
    _write_video(root / "nocap.avi", 20, 40, 40)
    rows.append({"video": "nocap.avi", "caption": ""})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _cfg(manifest, **kw):
    base = dict(
        manifest=str(manifest),
        kind="video",
        batch_size=2,
        num_frames=17,
        frame_stride=1,
        buckets=((32, 32), (32, 48)),
        default_motion_score=5.0,
        seed=3,
    )
    base.update(kw)
    return DataConfig(**base)


def test_manifest_reading_and_errors(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"video": "a.mp4", "caption": "x"}\n\n{"video": "/abs/b.mp4", "motion_score": 2}\n')
    rows = read_manifest(m)
    assert rows[0]["video"] == str(tmp_path / "a.mp4") and rows[0]["motion_score"] is None
    assert rows[1]["video"] == "/abs/b.mp4" and rows[1]["caption"] is None and rows[1]["motion_score"] == 2.0
    m.write_text('{"video": "a.mp4"}\nnot json\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(m)


def test_buckets_and_resize():
    buckets = parse_buckets("32x32,32x48")
    assert choose_bucket(40, 64, buckets) == (32, 48) and choose_bucket(50, 45, buckets) == (32, 32)
    with pytest.raises(ValueError, match="multiples of 16"):
        parse_buckets([(30, 32)])
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a centred vertical band survives the centre crop
    out = resize_center_crop(frames, 32, 32)
    assert out.shape == (2, 32, 32, 3) and out[0, 16, 16, 0] == 255 and out[0, 16, 0, 0] == 0


def test_read_clip_stride_and_errors(tmp_path):
    path = tmp_path / "v.avi"
    _write_video(path, 40, 32, 32)
    clip = read_clip(path, 17, stride=2)
    assert clip.shape == (17, 32, 32, 3) and clip.dtype == np.uint8
    with pytest.raises(SkipItem) as e:
        read_clip(path, 34, stride=2)  # needs 67 frames
    assert e.value.reason == "too_short"
    with pytest.raises(SkipItem) as e:
        read_clip(tmp_path / "missing.avi", 17)
    assert e.value.reason == "unreadable"
    with pytest.raises(ValueError, match="multiple of 17"):
        read_clip(path, 16)


def test_pipeline_batches_per_bucket_and_counts_skips(video_dataset):
    it = iter(make_dataset(_cfg(video_dataset, num_epochs=1)))
    batches = list(it)
    # 3 usable videos per bucket, batch 2: one full batch per bucket; the last, partial ones are dropped.
    assert len(batches) == 2
    shapes = sorted(b["video"].shape for b in batches)
    assert all(s[0] == 2 and s[1] == 17 and s[-1] == 3 for s in shapes)
    assert {s[2:4] for s in shapes} == {(32, 32), (32, 48)}
    for b in batches:
        assert b["video"].min() >= -1.0 and b["video"].max() <= 1.0 and len(b["caption"]) == 2
        assert all(c.startswith("square") for c in b["caption"])
    assert it.skipped == {"no_caption": 1, "too_short": 1, "unreadable": 1}
    assert "3 items skipped" in it.summary()


def test_iterator_state_restores_exactly(video_dataset):
    cfg = _cfg(video_dataset)
    ds = make_dataset(cfg)
    ref_it = iter(ds)
    reference = [next(ref_it) for _ in range(7)]
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # must survive JSON (grain's checkpoint format)
    assert state["pending"], "expected a half-filled bucket in the saved state"
    fresh = iter(make_dataset(cfg))
    fresh.set_state(state)
    for want in reference[3:]:
        got = next(fresh)
        np.testing.assert_array_equal(got["video"], want["video"])
        assert got["caption"] == want["caption"]
        np.testing.assert_array_equal(got["motion_score"], want["motion_score"])


def test_process_sharding_is_disjoint(video_dataset):
    cfg = _cfg(video_dataset, num_epochs=1, batch_size=1, shuffle=False)
    seen = []
    for pi in range(2):
        it = iter(make_dataset(cfg, process_index=pi, process_count=2))
        seen.append({c for b in it for c in b["caption"]})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"square {i}" for i in range(6)}


def test_all_items_unusable_raises(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"video": "nope.avi", "caption": "x"}\n')
    with pytest.raises(ValueError, match="every item of the dataset was skipped"):
        next(iter(make_dataset(_cfg(m))))
