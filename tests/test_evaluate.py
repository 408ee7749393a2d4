"""The image-to-video evaluation tool: metrics on rendered synthetic clips, aggregates, benchmark runs."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from stepvideo_jax import evaluation as evaluate
from stepvideo_jax.configs import get_config
from stepvideo_jax.data import synthetic
from stepvideo_jax.motion import to_work_gray

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clip(
    direction: str,
    speed: float,
    *,
    background: str = "stripes",
    frames: int = 17,
    size: int = 64,
    bg_colors=((30, 30, 38), (52, 52, 60)),
) -> np.ndarray:
    """A small yellow circle starting at the centre and moving `speed` px/frame (stays inside the frame)."""
    spec = synthetic.ClipSpec(
        shape="circle",
        color="yellow",
        size="small",
        direction=direction,
        background=background,
        radius=7.0,
        start=(size / 2, size / 2),
        speed=speed,
        bg_colors=bg_colors,
        bg_period=16.0,
        bg_angle=0.7,
    )
    return synthetic.render_clip(spec, frames, size, size)


# ------------------------------------------------------------------------------------------ fidelity
def test_psnr_identical_is_capped_and_ssim_is_one():
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    psnr, ssim = evaluate.first_frame_fidelity(image, image.copy())
    assert psnr == evaluate.PSNR_MAX_DB
    assert ssim == pytest.approx(1.0)


def test_psnr_of_a_known_perturbation():
    rng = np.random.default_rng(1)
    image = rng.integers(20, 236, (32, 48, 3), dtype=np.uint8)
    noise = rng.integers(-12, 13, image.shape)
    frame = (image.astype(int) + noise).astype(np.uint8)
    mse = np.mean(noise.astype(np.float64) ** 2)
    psnr, ssim = evaluate.first_frame_fidelity(frame, image)
    assert psnr == pytest.approx(10 * np.log10(255.0**2 / mse), abs=1e-9)
    assert 0.0 < ssim < 1.0


def test_fidelity_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="one size"):
        evaluate.first_frame_fidelity(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8))


# ----------------------------------------------------------------------------------- motion metrics
@pytest.mark.parametrize("background", ["plain", "checker"])
@pytest.mark.parametrize("direction", sorted(synthetic.DIRECTIONS))
def test_direction_of_rendered_clips(direction, background):
    label, dx, dy = evaluate.motion_direction(_clip(direction, 0.5, background=background))
    assert label == direction, (dx, dy)
    # The mean flow points along the rendered displacement (image coordinates, x right, y down).
    ux, uy = synthetic.DIRECTIONS[direction]
    assert dx * ux + dy * uy > 4 * evaluate.DIRECTION_MIN_FLOW


def test_direction_of_a_static_clip_is_none():
    label, dx, dy = evaluate.motion_direction(_clip("left", 0.0))
    assert label == "none" and np.hypot(dx, dy) < evaluate.DIRECTION_MIN_FLOW


def test_direction_of_a_shape_with_its_backgrounds_grey_level():
    # Yellow (240, 215, 40) on (205, 205, 205): grey levels 203 vs 205, so grey-level flow sees no shape;
    # the blue channel (40 vs 205) does.
    clip = _clip("right", 0.5, background="plain", bg_colors=((205, 205, 205), (205, 205, 205)))
    grey = to_work_gray(clip[0])  # [256, 256]
    assert grey.max() - grey.min() < 4.0
    label, dx, dy = evaluate.motion_direction(clip)
    assert label == "right" and dx > 4 * evaluate.DIRECTION_MIN_FLOW, (dx, dy)


@pytest.mark.parametrize("group", sorted(synthetic.BACKGROUND_GROUPS))
def test_direction_reads_v2_ground_truth(group):
    # Rendered training-like clips of one v2 background group, the ones with clear motion (score > 5).
    rng = np.random.default_rng(3)
    combos, _ = synthetic.split_captions(20, 0)
    right, total = 0, 0
    while total < 12:
        combo = combos[int(rng.integers(len(combos)))]
        spec = synthetic.sample_spec(
            rng, combo, frames=17, height=64, width=64, max_speed=0.6, backgrounds="v2", bg_group=group
        )
        clip = synthetic.render_clip(spec, 17, 64, 64)
        if synthetic.clip_motion_score(clip) > 5:
            total += 1
            right += evaluate.motion_direction(clip)[0] == spec.direction
    assert right >= 11, f"{right} of {total}"


def test_measured_motion_grows_with_speed():
    caption = "a small yellow circle moves right"
    slow = evaluate.evaluate_video(_clip("right", 0.2), _clip("right", 0.2)[0], 2.0, caption)
    fast = evaluate.evaluate_video(_clip("right", 0.5), _clip("right", 0.5)[0], 5.0, caption)
    assert fast["measured_motion"] > 1.5 * slow["measured_motion"] > 0
    assert fast["measured_motion"] == synthetic.clip_motion_score(_clip("right", 0.5))  # the training data's code
    assert fast["direction_match"] is True and fast["expected_direction"] == "right"
    assert fast["psnr"] == evaluate.PSNR_MAX_DB  # frame 0 is the input image


def test_smoothness_of_smooth_clip_beats_shuffled():
    clip = _clip("down", 0.5)
    shuffled = clip[np.random.default_rng(0).permutation(len(clip))]
    smooth_second, smooth_first = evaluate.smoothness(clip)
    shuffled_second, shuffled_first = evaluate.smoothness(shuffled)
    assert smooth_second < 0.5 * shuffled_second
    assert smooth_first < shuffled_first
    assert evaluate.smoothness(np.repeat(clip[:1], 5, axis=0)) == (0.0, 0.0)


def test_smoothness_matches_its_definition():
    frames = np.random.default_rng(2).integers(0, 256, (6, 4, 5, 3), dtype=np.uint8)
    x = frames.astype(np.float64) / 255
    second, first = evaluate.smoothness(frames)
    assert second == pytest.approx(np.abs(x[2:] - 2 * x[1:-1] + x[:-2]).mean(), rel=1e-6)
    assert first == pytest.approx(np.abs(np.diff(x, axis=0)).mean(), rel=1e-6)


def test_direction_match_is_none_without_a_direction_word():
    clip = _clip("up", 0.5)
    row = evaluate.evaluate_video(clip, clip[0], 5.0, "a cat sits")
    assert row["direction"] == "up" and row["expected_direction"] is None and row["direction_match"] is None


# -------------------------------------------------------------------------------------- aggregates
def _row(item, requested, measured, direction="left", expected="left", psnr=30.0, ssim=0.9, smooth=0.01):
    return {
        "category": "c",
        "id": item,
        "requested_motion": requested,
        "measured_motion": measured,
        "psnr": psnr,
        "ssim": ssim,
        "smoothness": smooth,
        "frame_diff": 2 * smooth,
        "direction": direction,
        "expected_direction": expected,
        "direction_match": None if expected is None else direction == expected,
    }


def test_summarize_on_hand_made_rows():
    rows = [
        # a: rises strictly; right direction at its highest score (10), wrong at 2 (ignored).
        _row("a", 2, 1.0, direction="none", psnr=20.0),
        _row("a", 5, 2.0),
        _row("a", 10, 3.0, ssim=0.5),
        # b: not monotonic (5 -> 10 falls); wrong direction at 10.
        _row("b", 10, 2.5, direction="up"),
        _row("b", 2, 1.0),
        _row("b", 5, 3.0),
        # c: equal measured values are not a strict rise; caption names no direction.
        _row("c", 2, 1.0, expected=None),
        _row("c", 5, 1.0, expected=None),
        _row("c", 10, 4.0, expected=None),
        # d: rises; right direction at 10.
        _row("d", 5, 0.5, smooth=0.04),
        _row("d", 10, 0.7),
        _row("d", 2, 0.1),
    ]
    s = evaluate.summarize(rows)
    assert s["videos"] == 12 and s["prompts"] == 4
    assert s["motion_monotonic_fraction"] == 0.5 and s["motion_monotonic_prompts"] == 4
    # a and d right at their highest score, b wrong, c names no direction.
    assert s["direction_accuracy"] == pytest.approx(2 / 3) and s["direction_prompts"] == 3
    assert s["psnr_min"] == 20.0 and s["psnr_mean"] == pytest.approx((20.0 + 11 * 30.0) / 12)
    assert s["ssim_min"] == 0.5 and s["ssim_mean"] == pytest.approx((0.5 + 11 * 0.9) / 12)
    assert s["smoothness_mean"] == pytest.approx((0.04 + 11 * 0.01) / 12)
    assert s["measured_motion_by_requested"] == pytest.approx({"2": 0.775, "5": 1.625, "10": 2.55})


def test_summarize_single_score_prompts_have_no_monotonic_fraction():
    s = evaluate.summarize([_row("a", 5, 1.0), _row("b", 5, 2.0, direction="right")])
    assert s["motion_monotonic_fraction"] is None and s["direction_accuracy"] == 0.5


# ---------------------------------------------------------------------------------- benchmark mode
def _bench(root, items):
    for category, item_id, prompt, seed in items:
        folder = root / category
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{item_id}.png")
        if prompt is not None:
            (folder / f"{item_id}.txt").write_text(prompt + "\n", encoding="utf-8")
    return root


def test_benchmark_missing_prompt_names_the_file(tmp_path):
    bench = _bench(tmp_path / "bench", [("cat", "001", "a thing moves left", 0), ("cat", "002", None, 1)])
    with pytest.raises(ValueError, match=r"002\.txt.*missing.*<category>/<ID>\.txt"):
        evaluate.find_benchmark_items(str(bench))


def test_benchmark_empty_folders(tmp_path):
    (tmp_path / "bench").mkdir()
    with pytest.raises(ValueError, match="no category folders"):
        evaluate.find_benchmark_items(str(tmp_path / "bench"))
    (tmp_path / "bench" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*no \.png/\.jpg images"):
        evaluate.find_benchmark_items(str(tmp_path / "bench"))


def _tiny_config(tmp_path):
    config = get_config("ti2v:tiny")
    config.steps = 2
    config.progress = False
    config.output_dir = str(tmp_path / "unused")
    config.tokenizer_cache_dir = str(tmp_path / "tok")
    return config


def test_benchmark_end_to_end_tiny(tmp_path, monkeypatch):
    from stepvideo_jax.diffusion.pipeline import SampleSettings, prepare_image
    from stepvideo_jax.evaluation import runner

    # The runner generates through the batch generation loop (`generate_videos`), not a loop of its own.
    generated = []
    shared = runner.generate_videos

    def spy(*args, **kwargs):
        for video in shared(*args, **kwargs):
            generated.append(video.settings.motion_score)
            yield video

    monkeypatch.setattr(runner, "generate_videos", spy)
    config = _tiny_config(tmp_path)
    bench = _bench(
        tmp_path / "bench",
        [("shapes", "001", "a red circle moves left", 0), ("shapes", "002", "a blue square moves up", 1)],
    )
    out = tmp_path / "out"
    summary = evaluate.evaluate_benchmark(config, str(bench), str(out), motion_scores=(2, 5), seed=7)
    with open(out / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and tuple(rows[0]) == evaluate.CSV_COLUMNS
    assert generated == [2.0, 5.0, 2.0, 5.0]
    assert [(r["id"], r["requested_motion"]) for r in rows] == [
        ("001", "2.0"),
        ("001", "5.0"),
        ("002", "2.0"),
        ("002", "5.0"),
    ]
    assert summary["videos"] == 4 and summary["prompts"] == 2 and summary["seed"] == 7
    assert json.loads((out / "summary.json").read_text())["videos"] == 4
    assert "direction_accuracy" in (out / "results.md").read_text()
    for row in rows:
        stem = out / "videos" / "shapes" / f"{row['id']}_ms{float(row['requested_motion']):g}"
        for ext in (".npy", ".mp4", ".png"):
            assert (stem.parent / (stem.name + ext)).is_file(), ext
        frames = np.load(str(stem) + ".npy")
        assert frames.dtype == np.uint8 and frames.shape == (17, 64, 96, 3)
        # Recompute the fidelity from the saved frames and the input image prepared at the config size.
        c = config.copy_and_resolve_references()
        c.image = str(bench / "shapes" / f"{row['id']}.png")
        image = evaluate.image_to_uint8(prepare_image(SampleSettings.from_config(c)))
        np.testing.assert_array_equal(image, np.asarray(Image.open(c.image)))  # same size: prepared exactly
        psnr, ssim = evaluate.first_frame_fidelity(frames[0], image)
        assert abs(float(row["psnr"]) - psnr) <= 1e-6 and abs(float(row["ssim"]) - ssim) <= 1e-6
        sheet = np.asarray(Image.open(str(stem) + ".png"))
        np.testing.assert_array_equal(sheet[:, :96], image)  # the contact sheet starts with the input image
        np.testing.assert_array_equal(sheet[:, 100:196], frames[0])
    # The same seed at both scores: the two videos of a prompt differ only through the motion score.
    a, b = (np.load(out / "videos" / "shapes" / f"001_ms{s}.npy") for s in (2, 5))
    assert not np.array_equal(a, b)


def test_folder_mode_matches_direct_metrics(tmp_path):
    clip = _clip("left", 0.5)
    np.save(tmp_path / "v.npy", clip)
    Image.fromarray(clip[0]).save(tmp_path / "first.png")
    index = tmp_path / "index.jsonl"
    index.write_text(
        json.dumps(
            {
                "video": "v.npy",
                "image": "first.png",
                "motion_score": 3,
                "caption": "a small yellow circle moves left",
                "id": "x",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    summary = evaluate.evaluate_folder(str(index), str(tmp_path / "out"))
    expected = evaluate.evaluate_video(clip, clip[0], 3.0, "a small yellow circle moves left")
    assert summary["direction_accuracy"] == 1.0 and summary["psnr_min"] == evaluate.PSNR_MAX_DB
    with open(tmp_path / "out" / "results.csv", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["measured_motion"]) == expected["measured_motion"] and row["direction"] == "left"
    index.write_text('{"video": "v.npy"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="missing"):
        evaluate.evaluate_folder(str(index), str(tmp_path / "out"))


def test_compare_tool_overrides_and_video_similarity():
    from stepvideo_jax.tools.compare_sampling import parse_overrides, video_similarity

    assert parse_overrides(["cache.policy=auto", "guidance_interval=(0.0, 0.6)", "cache.static_threshold=0.2"]) == {
        "cache.policy": "auto",
        "guidance_interval": (0.0, 0.6),
        "cache.static_threshold": 0.2,
    }
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_overrides(["cache.policy"])
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert video_similarity(video, video) == (evaluate.PSNR_MAX_DB, pytest.approx(1.0))
    noisy = video.astype(np.int16)
    noisy[0, 0, 0, 0] = noisy[0, 0, 0, 0] + (10 if noisy[0, 0, 0, 0] < 128 else -10)  # one value off by 10
    psnr, ssim = video_similarity(noisy.astype(np.uint8), video)
    assert psnr == pytest.approx(10 * np.log10(255.0**2 / (100 / video.size)), rel=1e-9) and ssim < 1.0
