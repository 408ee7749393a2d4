"""Image-to-video evaluation: first-frame fidelity, motion-score control, smoothness and direction.

    # generate and score a Step-Video-TI2V-Eval style folder (DIR/<category>/<ID>.png|.jpg + <ID>.txt)
    python -m stepvideo_jax.tools.evaluate --config=configs/demo.py --bench_dir=DIR --out=OUT \
        [--motion_scores=2,5,10] [--seed=1234] [--limit=N]
    # score videos generated elsewhere (one JSON object per line, paths relative to the index file:
    # {"video": ".npy (uint8 [F,H,W,3]) or .mp4", "image": path, "motion_score": x, "caption": text, "id": opt})
    python -m stepvideo_jax.tools.evaluate --videos=INDEX.jsonl --out=OUT

Metrics of one video (uint8 frames [F, H, W, 3]) given its input image, requested motion score and caption:

- ``psnr`` / ``ssim``: frame 0 against the input image (scikit-image, data_range=255, SSIM over the
  RGB channels). Identical images have infinite PSNR; it is capped at ``PSNR_MAX_DB`` so that means
  and JSON stay finite (a generated frame never comes near it).
- ``measured_motion``: ``stepvideo_jax.motion.motion_score_from_frames(frames[::SAMPLE_EVERY])``, the
  same code that scored the training videos, next to the ``requested_motion``.
- ``smoothness``: mean |x[t+1] - 2 x[t] + x[t-1]| over all pixels, channels and t = 1..F-2, with x in
  [0, 1] (temporal acceleration; lower = smoother; 0 for a static video or a linear fade);
  ``frame_diff``: mean |x[t+1] - x[t]| (how much changes per frame at all).
- ``direction``: Farneback optical flow from frame 0 to the last frame, in grey at the motion score's
  working size (shorter side ``WORK_SHORT_SIDE`` = 256 px); the mean flow vector (``flow_dx``,
  ``flow_dy``, working pixels, x right / y down) over the pixels whose flow magnitude is in the top
  10 % is labelled by its dominant axis and sign (left/right/up/down), or "none" when its length is
  below ``DIRECTION_MIN_FLOW``. ``direction_match`` = direction == the caption's direction word
  (``synthetic.direction_of_caption``); None when the caption names no direction.

Aggregates (``summarize``) over prompts (a prompt = one image + caption, generated at several motion
scores with the same seed): mean/min PSNR and SSIM over all videos; the fraction of prompts (with >= 2
requested scores) whose measured motion rises strictly with the requested score; the direction accuracy
over prompts whose caption names a direction, measured on each prompt's video at its HIGHEST requested
score (the clearest motion); mean smoothness and frame_diff; the mean measured motion per requested score.

Benchmark outputs under OUT: ``videos/<category>/<ID>_ms<score>.mp4`` (H.264, for viewing),
``.npy`` (the exact uint8 frames: metrics are computed on these, not on the lossy MP4), ``.png`` (a
contact sheet: the input image, a 4-px white gap, then up to ``SHEET_FRAMES`` evenly spaced frames
from the first to the last, left to right, every tile scaled to at most ``SHEET_MAX_HEIGHT`` px high),
plus ``results.csv`` (one row per video), ``results.md`` (aggregates + per-video table) and
``summary.json``. Files are written to a temporary name and renamed, replacing an earlier run's.
The input image is compared as prepared for generation (cover-resized and centre-cropped to the
config's size), rounded back to uint8.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from stepvideo_jax import video_io
from stepvideo_jax.data.synthetic import direction_of_caption
from stepvideo_jax.motion import SAMPLE_EVERY, TOP_FRACTION, dense_flow, motion_score_from_frames, to_work_gray

__all__ = [
    "PSNR_MAX_DB",
    "DIRECTION_MIN_FLOW",
    "CSV_COLUMNS",
    "first_frame_fidelity",
    "motion_direction",
    "smoothness",
    "evaluate_video",
    "summarize",
    "contact_sheet",
    "image_to_uint8",
    "find_benchmark_items",
    "evaluate_benchmark",
    "evaluate_folder",
    "write_reports",
]

PSNR_MAX_DB = 100.0
DIRECTION_MIN_FLOW = 1.0  # working-size pixels (shorter side 256) travelled from first to last frame
SHEET_FRAMES = 8
SHEET_MAX_HEIGHT = 256
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
BENCH_LAYOUT = "DIR/<category>/<ID>.png|.jpg + DIR/<category>/<ID>.txt (the prompt)"
CSV_COLUMNS = (
    "category", "id", "prompt", "requested_motion", "measured_motion", "psnr", "ssim", "smoothness",
    "frame_diff", "direction", "expected_direction", "direction_match", "flow_dx", "flow_dy", "video",
)


# -------------------------------------------------------------------------------------------- metrics
def _check_video(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}"
        raise ValueError(f"video must be uint8 [frames, height, width, 3]; got {got}")


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """float [H, W, 3] in [-1, 1] (as `prepare_image` / `read_image` give) -> uint8, rounded (so a
    uint8 image read and prepared at its own size comes back exactly)."""
    return np.clip(np.rint((np.asarray(image, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def first_frame_fidelity(frame: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB capped at PSNR_MAX_DB, SSIM) of a uint8 [H, W, 3] frame against the uint8 input image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if frame.shape != image.shape or frame.dtype != np.uint8 or image.dtype != np.uint8 or frame.ndim != 3:
        raise ValueError(f"frame and image must both be uint8 [H, W, 3] of one size; got {frame.dtype} {frame.shape} "
                         f"and {image.dtype} {image.shape}")
    if np.array_equal(frame, image):
        psnr = PSNR_MAX_DB  # mse 0: infinite
    else:
        psnr = min(float(peak_signal_noise_ratio(image, frame, data_range=255)), PSNR_MAX_DB)
    ssim = float(structural_similarity(image, frame, data_range=255, channel_axis=-1))
    return psnr, ssim


def motion_direction(frames: np.ndarray) -> tuple[str, float, float]:
    """(label, dx, dy): the mean Farneback flow (working pixels, x right, y down) from the first to
    the last frame over the top-10 % pixels by magnitude, labelled left/right/up/down by its dominant
    axis, or "none" if shorter than DIRECTION_MIN_FLOW."""
    _check_video(frames)
    if frames.shape[0] < 2:
        raise ValueError(f"direction needs at least 2 frames; got {frames.shape[0]}")
    flow = dense_flow(to_work_gray(frames[0]), to_work_gray(frames[-1]))  # the motion score's flow and size
    vectors = flow.reshape(-1, 2).astype(np.float64)  # [pixels, (dx, dy)]
    mag = np.hypot(vectors[:, 0], vectors[:, 1])
    k = max(1, int(round(TOP_FRACTION * mag.size)))
    dx, dy = vectors[np.argpartition(mag, mag.size - k)[mag.size - k :]].mean(axis=0)
    if math.hypot(dx, dy) < DIRECTION_MIN_FLOW:
        return "none", float(dx), float(dy)
    if abs(dx) >= abs(dy):
        return ("right" if dx > 0 else "left"), float(dx), float(dy)
    return ("down" if dy > 0 else "up"), float(dx), float(dy)


def smoothness(frames: np.ndarray) -> tuple[float, float]:
    """(mean |x[t+1] - 2x[t] + x[t-1]|, mean |x[t+1] - x[t]|) with x in [0, 1]; lower = smoother."""
    _check_video(frames)
    if frames.shape[0] < 3:
        raise ValueError(f"smoothness needs at least 3 frames; got {frames.shape[0]}")
    x = lambda t: frames[t].astype(np.float32) / 255.0  # noqa: E731  one frame at a time: long videos stay small
    second = sum(float(np.abs(x(t + 1) - 2 * x(t) + x(t - 1)).mean()) for t in range(1, frames.shape[0] - 1))
    first = sum(float(np.abs(x(t + 1) - x(t)).mean()) for t in range(frames.shape[0] - 1))
    return second / (frames.shape[0] - 2), first / (frames.shape[0] - 1)


def evaluate_video(frames: np.ndarray, image: np.ndarray, requested_motion: float, caption: str) -> dict[str, Any]:
    """All per-video metrics (see the module docstring) of uint8 frames [F, H, W, 3] given the uint8
    input image [H, W, 3], the requested motion score and the caption."""
    _check_video(frames)
    if frames.shape[0] < SAMPLE_EVERY + 1:
        raise ValueError(f"evaluation needs >= {SAMPLE_EVERY + 1} frames (two motion-score samples); "
                         f"got {frames.shape[0]}")
    psnr, ssim = first_frame_fidelity(frames[0], image)
    second, first = smoothness(frames)
    label, dx, dy = motion_direction(frames)
    expected = direction_of_caption(caption)
    return {
        "requested_motion": float(requested_motion),
        "measured_motion": motion_score_from_frames(frames[::SAMPLE_EVERY]),
        "psnr": psnr,
        "ssim": ssim,
        "smoothness": second,
        "frame_diff": first,
        "direction": label,
        "expected_direction": expected,
        "direction_match": None if expected is None else label == expected,
        "flow_dx": dx,
        "flow_dy": dy,
    }


def _prompt_key(row: dict[str, Any]) -> tuple:
    return (row.get("category", ""), row.get("id", ""))


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregates of per-video rows (dicts with evaluate_video's keys + "category" and "id"; rows that
    share (category, id) are one prompt at several requested motion scores)."""
    if not rows:
        raise ValueError("summarize needs at least one evaluated video")
    prompts: dict[tuple, list[dict]] = {}
    for row in rows:
        prompts.setdefault(_prompt_key(row), []).append(row)
    monotonic, multi = 0, 0
    correct, directed = 0, 0
    for group in prompts.values():
        ordered = sorted(group, key=lambda r: r["requested_motion"])
        if len({r["requested_motion"] for r in ordered}) >= 2:
            multi += 1
            measured = [r["measured_motion"] for r in ordered]
            requested = [r["requested_motion"] for r in ordered]
            # A repeated requested score cannot rise, so such a prompt does not count as monotonic.
            monotonic += all(m1 > m0 and q1 > q0 for m0, m1, q0, q1 in
                             zip(measured, measured[1:], requested, requested[1:]))
        top = ordered[-1]  # direction is judged at the prompt's highest requested score
        if top["expected_direction"] is not None:
            directed += 1
            correct += bool(top["direction_match"])
    by_score: dict[float, list[float]] = {}
    for row in rows:
        by_score.setdefault(row["requested_motion"], []).append(row["measured_motion"])
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    return {
        "videos": len(rows),
        "prompts": len(prompts),
        "psnr_mean": mean("psnr"),
        "psnr_min": float(min(r["psnr"] for r in rows)),
        "ssim_mean": mean("ssim"),
        "ssim_min": float(min(r["ssim"] for r in rows)),
        "motion_monotonic_fraction": monotonic / multi if multi else None,
        "motion_monotonic_prompts": multi,
        "direction_accuracy": correct / directed if directed else None,
        "direction_prompts": directed,
        "smoothness_mean": mean("smoothness"),
        "frame_diff_mean": mean("frame_diff"),
        "measured_motion_by_requested": {
            f"{k:g}": float(np.mean(v)) for k, v in sorted(by_score.items())
        },
    }


# -------------------------------------------------------------------------------------------- outputs
def _write_atomic(path: str, write) -> str:
    """Calls write(tmp_path) on a temporary file beside `path`, then renames it to `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_text(path: str, text: str) -> str:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return _write_atomic(path, write)


def contact_sheet(image: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3]: the input image, a 4-px white gap, then up to SHEET_FRAMES evenly spaced
    frames (first to last) in one row; tiles scaled to at most SHEET_MAX_HEIGHT px high."""
    _check_video(frames)
    count = min(frames.shape[0], SHEET_FRAMES)
    picks = np.unique(np.round(np.linspace(0, frames.shape[0] - 1, count)).astype(int))
    h, w = frames.shape[1:3]
    scale = min(1.0, SHEET_MAX_HEIGHT / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    tile = lambda x: x if scale == 1.0 else cv2.resize(x, size, interpolation=cv2.INTER_AREA)  # noqa: E731
    gap = np.full((size[1], 4, 3), 255, np.uint8)
    return np.concatenate([tile(image), gap] + [tile(frames[i]) for i in picks], axis=1)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _markdown(summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    lines = ["# Image-to-video evaluation", "", "| metric | value |", "| --- | --- |"]
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
        lines.append(f"| {key} | {_fmt(value)} |")
    lines += ["", "Direction accuracy is measured on each prompt's video at its highest requested motion score.", ""]
    cols = [c for c in CSV_COLUMNS if c not in ("flow_dx", "flow_dy")]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        cells = [_fmt(row.get(c)).replace("|", "\\|") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str, rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes OUT/results.csv, OUT/results.md and OUT/summary.json; returns summary.json's content
    (the aggregates followed by `extra`, e.g. the run's settings)."""
    summary = summarize(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:  # floats as repr: the CSV round-trips exactly
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    _write_text(os.path.join(out_dir, "results.csv"), buf.getvalue())
    _write_text(os.path.join(out_dir, "results.md"), _markdown(summary, rows))
    summary = {**summary, **(extra or {})}
    _write_text(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary


# ------------------------------------------------------------------------------------ benchmark mode
def find_benchmark_items(bench_dir: str) -> list[tuple[str, str, str, str]]:
    """(category, id, image path, prompt) of every item of a benchmark folder, sorted."""
    if not os.path.isdir(bench_dir):
        raise ValueError(f"benchmark folder {bench_dir!r} does not exist; expected {BENCH_LAYOUT}")
    categories = sorted(d for d in os.listdir(bench_dir)
                        if not d.startswith(".") and os.path.isdir(os.path.join(bench_dir, d)))
    if not categories:
        raise ValueError(f"benchmark folder {bench_dir!r} has no category folders; expected {BENCH_LAYOUT}")
    items = []
    for category in categories:
        folder = os.path.join(bench_dir, category)
        images = sorted(n for n in os.listdir(folder) if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise ValueError(f"benchmark category folder {folder!r} has no .png/.jpg images; expected {BENCH_LAYOUT}")
        for name in images:
            item_id = os.path.splitext(name)[0]
            txt = os.path.join(folder, item_id + ".txt")
            if not os.path.isfile(txt):
                raise ValueError(f"prompt file {txt!r} is missing for image {name!r}; expected {BENCH_LAYOUT}")
            with open(txt, encoding="utf-8") as f:
                prompt = f.read().strip()
            if not prompt:
                raise ValueError(f"prompt file {txt!r} is empty; expected {BENCH_LAYOUT}")
            items.append((category, item_id, os.path.join(folder, name), prompt))
    return items


def _mesh(config):
    if not config.get("mesh"):
        return None
    from stepvideo_jax.sharding import MeshConfig, make_mesh

    return make_mesh(MeshConfig.parse(config.mesh))


def evaluate_benchmark(config, bench_dir: str, out_dir: str, motion_scores: Sequence[float] = (2, 5, 10),
                       seed: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """Generates every benchmark item at every requested motion score (models loaded once, the same
    seed for every video), writes the videos, contact sheets and reports under out_dir and returns
    the summary (see the module docstring). The release's 540p output crop is not applied: frame 0
    is compared with the input prepared at the config's size."""
    from tqdm import tqdm

    from stepvideo_jax.components import load_components
    from stepvideo_jax.diffusion.pipeline import SampleSettings, VideoPipeline, prepare_image
    from stepvideo_jax.sharding import use_mesh

    scores = [float(s) for s in motion_scores]
    if not scores or any(not math.isfinite(s) or s < 0 for s in scores) or len(set(scores)) != len(scores):
        raise ValueError(f"motion_scores must be distinct finite numbers >= 0; got {list(motion_scores)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    items = find_benchmark_items(bench_dir)[:limit]
    out_dir = video_io.check_writable_dir(out_dir, "--out")

    def settings_for(image_path: str, prompt: str, score: float) -> SampleSettings:
        c = config.copy_and_resolve_references()
        c.prompt, c.image, c.motion_score, c.output_dir = prompt, image_path, score, out_dir
        if seed is not None:
            c.seed = int(seed)
        return SampleSettings.from_config(c)

    # Validate every item's settings before loading anything (bad images or config fail fast).
    plans = [(item, [settings_for(item[2], item[3], s) for s in scores]) for item in items]
    if not plans[0][1][0].ti2v:
        raise ValueError("evaluation needs an image-to-video config (use_additional_conditions=True)")
    mesh = _mesh(config)
    pipeline = VideoPipeline(*load_components(config, mesh), mesh=mesh)
    rows = []
    with use_mesh(mesh), tqdm(total=len(plans) * len(scores), desc="evaluate", unit="video") as bar:
        for (category, item_id, _, prompt), settings_list in plans:
            prepared = prepare_image(settings_list[0])  # float32 [H, W, 3] in [-1, 1]
            image_u8 = image_to_uint8(prepared)
            for settings in settings_list:
                frames = video_io.to_uint8(pipeline(settings, prepared).video)  # [F, H, W, 3]
                stem = os.path.join(out_dir, "videos", category, f"{item_id}_ms{settings.motion_score:g}")
                os.makedirs(os.path.dirname(stem), exist_ok=True)
                _write_atomic(stem + ".npy", lambda tmp: np.save(tmp, frames))
                video_io.write_mp4(stem + ".mp4", frames, fps=settings.fps, denoise=settings.denoise_filter)
                video_io.write_png(stem + ".png", contact_sheet(image_u8, frames))
                row = {"category": category, "id": item_id, "prompt": prompt,
                       **evaluate_video(frames, image_u8, settings.motion_score, prompt),
                       "video": os.path.relpath(stem + ".npy", out_dir)}
                rows.append(row)
                bar.update(1)
    extra = {"bench_dir": os.path.abspath(bench_dir), "motion_scores": scores,
             "seed": plans[0][1][0].seed, "height": plans[0][1][0].height, "width": plans[0][1][0].width,
             "frames": plans[0][1][0].frames, "steps": plans[0][1][0].steps}
    return write_reports(out_dir, rows, extra)


# --------------------------------------------------------------------------------------- folder mode
def _read_frames(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"video {path!r} does not exist (expected a .npy of uint8 [F, H, W, 3] or an .mp4)")
    if not path.lower().endswith((".npy", ".mp4")):
        raise ValueError(f"video {path!r} must be a .npy of uint8 [F, H, W, 3] or an .mp4")
    try:
        frames = np.load(path, allow_pickle=False) if path.lower().endswith(".npy") else video_io.read_mp4(path)
    except (OSError, ValueError, RuntimeError, EOFError, StopIteration) as e:  # empty, truncated or corrupt
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"video {path!r} is not readable ({reason}); regenerate it or drop it from the index") \
            from None
    _check_video(frames)
    return frames


def _index_entries(index_path: str) -> Iterable[tuple[int, dict[str, Any]]]:
    if not os.path.isfile(index_path):
        raise ValueError(f"video index {index_path!r} does not exist (expected JSONL: one "
                         '{"video", "image", "motion_score", "caption", "id"?} object per line)')
    with open(index_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{index_path}:{n} is not JSON ({e})") from None
            required = ("video", "image", "motion_score", "caption")
            missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise ValueError(f"{index_path}:{n} must be an object with video, image, motion_score, caption "
                                 f"(id, category optional); missing {missing}")
            yield n, entry


def evaluate_folder(index_path: str, out_dir: str) -> dict[str, Any]:
    """Scores already generated videos listed in a JSONL index (paths relative to the index file)
    and writes the reports under out_dir; entries with the same id (default: the same image and
    caption) are one prompt. The image is cover-resized and centre-cropped to the video's size."""
    from tqdm import tqdm

    root = os.path.dirname(os.path.abspath(index_path))
    entries = list(_index_entries(index_path))
    if not entries:
        raise ValueError(f"video index {index_path!r} lists no videos")
    out_dir = video_io.check_writable_dir(out_dir, "--out")
    rows = []
    for _, entry in tqdm(entries, desc="evaluate", unit="video"):
        video_path = os.path.join(root, entry["video"])
        frames = _read_frames(video_path)
        image = video_io.cover_resize_crop(video_io.read_image(os.path.join(root, entry["image"])), *frames.shape[1:3])
        item_id = entry.get("id") or f"{entry['image']}|{entry['caption']}"
        rows.append({"category": entry.get("category", ""), "id": str(item_id), "prompt": entry["caption"],
                     **evaluate_video(frames, image_to_uint8(image), float(entry["motion_score"]), entry["caption"]),
                     "video": video_path})
    return write_reports(out_dir, rows, {"index": os.path.abspath(index_path)})


# ------------------------------------------------------------------------------------------------ CLI
_FLAGS: dict[str, Any] = {}


def _define_flags() -> None:
    """Defined only when run as a program, so importing this module defines no global flags."""
    from absl import flags
    from ml_collections import config_flags

    _FLAGS["config"] = config_flags.DEFINE_config_file("config", None, "Sampling config (FILE or FILE:VARIANT).")
    flags.DEFINE_string("bench_dir", None, f"benchmark folder: {BENCH_LAYOUT}")
    flags.DEFINE_string("videos", None, "JSONL index of already generated videos (instead of --bench_dir)")
    flags.DEFINE_string("out", None, "output folder", required=True)
    flags.DEFINE_list("motion_scores", ["2", "5", "10"], "requested motion scores per prompt")
    flags.DEFINE_integer("seed", None, "sampling seed for every video (default: the config's)")
    flags.DEFINE_integer("limit", None, "evaluate only the first N benchmark items")


def main(argv):
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    if bool(f.bench_dir) == bool(f.videos):
        raise app.UsageError("give exactly one of --bench_dir (with --config) or --videos")
    config = _FLAGS["config"].value
    try:
        if f.videos:
            summary = evaluate_folder(f.videos, f.out)
        else:
            if config is None:
                raise app.UsageError("--bench_dir needs --config=FILE[:VARIANT]")
            if config.get("compilation_cache_dir"):
                import jax

                jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
            try:
                scores = [float(s) for s in f.motion_scores]
            except ValueError:
                raise ValueError(f"--motion_scores must be comma-separated numbers; got {f.motion_scores}") from None
            summary = evaluate_benchmark(config, f.bench_dir, f.out, scores, seed=f.seed, limit=f.limit)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(summary, indent=2))
    print(f"wrote {os.path.join(f.out, 'results.md')}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
