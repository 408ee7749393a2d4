"""Evaluation runs: generate and score a Step-Video-TI2V-Eval style folder (``evaluate_benchmark``),
or score videos generated elsewhere, listed in a JSONL index (``evaluate_folder``).

Benchmark outputs under OUT: ``videos/<category>/<ID>_ms<score>.mp4`` (H.264, for viewing),
``.npy`` (the exact uint8 frames: metrics are computed on these, not on the lossy MP4), ``.png`` (a
contact sheet, see ``reports``), plus the reports. Files are written to a temporary name and renamed,
replacing an earlier run's. The input image is compared as prepared for generation (cover-resized and
centre-cropped to the config's size), rounded back to uint8. The sampling pipeline is imported when a
benchmark runs, so importing this module loads no model code.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from stepvideo_jax import video_io
from stepvideo_jax.components import load_components
from stepvideo_jax.diffusion.pipeline import SampleSettings, VideoPipeline, generate_videos, prepare_image
from stepvideo_jax.evaluation.metrics import check_video, evaluate_video, image_to_uint8
from stepvideo_jax.evaluation.reports import contact_sheet, write_reports
from stepvideo_jax.files import atomic_path, iter_jsonl
from stepvideo_jax.sharding import MeshConfig, make_mesh

__all__ = ["BENCH_LAYOUT", "IMAGE_EXTENSIONS", "find_benchmark_items", "evaluate_benchmark", "evaluate_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
BENCH_LAYOUT = "DIR/<category>/<ID>.png|.jpg + DIR/<category>/<ID>.txt (the prompt)"


# ------------------------------------------------------------------------------------ benchmark mode
def find_benchmark_items(bench_dir: str) -> list[tuple[str, str, str, str]]:
    """(category, id, image path, prompt) of every item of a benchmark folder, sorted."""
    if not os.path.isdir(bench_dir):
        raise ValueError(f"benchmark folder {bench_dir!r} does not exist; expected {BENCH_LAYOUT}")
    categories = sorted(
        d for d in os.listdir(bench_dir) if not d.startswith(".") and os.path.isdir(os.path.join(bench_dir, d))
    )
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
    return make_mesh(MeshConfig.parse(config.mesh)) if config.get("mesh") else None


def evaluate_benchmark(
    config,
    bench_dir: str,
    out_dir: str,
    motion_scores: Sequence[float] = (2, 5, 10),
    seed: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Generates every benchmark item at every requested motion score (models loaded once, the same
    seed for every video), writes the videos, contact sheets and reports under out_dir and returns
    the summary (`metrics.summarize` plus the run settings). The release's 540p output crop is not applied: frame 0
    is compared with the input prepared at the config's size."""
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
        # Frame 0 is compared with the input at the config's size, so the 540p output crop stays off.
        return dataclasses.replace(SampleSettings.from_config(c), crop_540p=False)

    # Validate every item's settings before loading anything (bad images or config fail fast).
    plans = [(item, [settings_for(item[2], item[3], s) for s in scores]) for item in items]
    if not plans[0][1][0].ti2v:
        raise ValueError("evaluation needs an image-to-video config (use_additional_conditions=True)")
    mesh = _mesh(config)
    pipeline = VideoPipeline(*load_components(config, mesh), mesh=mesh)

    def jobs():  # (settings, prepared image) in report order; each image read when its item comes
        for _, settings_list in plans:
            prepared = prepare_image(settings_list[0])  # float32 [H, W, 3] in [-1, 1]
            for settings in settings_list:
                yield settings, prepared

    labels = [(category, item_id, prompt) for (category, item_id, _, prompt), sl in plans for _ in sl]
    videos = generate_videos(pipeline, jobs(), mesh=mesh, total=len(labels), progress=True, desc="evaluate")
    rows = []
    for (category, item_id, prompt), video in zip(labels, videos):
        settings, frames = video.settings, video.frames  # uint8 [F, H, W, 3]
        image_u8 = image_to_uint8(video.image)
        stem = os.path.join(out_dir, "videos", category, f"{item_id}_ms{settings.motion_score:g}")
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        with atomic_path(stem + ".npy") as tmp:
            np.save(tmp, frames)
        video_io.write_mp4(stem + ".mp4", frames, fps=settings.fps, denoise=settings.denoise_filter)
        video_io.write_png(stem + ".png", contact_sheet(image_u8, frames))
        row = {
            "category": category,
            "id": item_id,
            "prompt": prompt,
            **evaluate_video(frames, image_u8, settings.motion_score, prompt),
            "video": os.path.relpath(stem + ".npy", out_dir),
        }
        rows.append(row)
    extra = {
        "bench_dir": os.path.abspath(bench_dir),
        "motion_scores": scores,
        "seed": plans[0][1][0].seed,
        "height": plans[0][1][0].height,
        "width": plans[0][1][0].width,
        "frames": plans[0][1][0].frames,
        "steps": plans[0][1][0].steps,
    }
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
        raise ValueError(
            f"video {path!r} is not readable ({reason}); regenerate it or drop it from the index"
        ) from None
    check_video(frames)
    return frames


def _index_entries(index_path: str) -> Iterable[tuple[int, dict[str, Any]]]:
    if not os.path.isfile(index_path):
        raise ValueError(
            f"video index {index_path!r} does not exist (expected JSONL: one "
            '{"video", "image", "motion_score", "caption", "id"?} object per line)'
        )
    for n, entry in iter_jsonl(index_path):
        required = ("video", "image", "motion_score", "caption")
        missing = [k for k in required if k not in entry]
        if missing:
            raise ValueError(
                f"{index_path}:{n} must be an object with video, image, motion_score, caption "
                f"(id, category optional); missing {missing}"
            )
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
        rows.append(
            {
                "category": entry.get("category", ""),
                "id": str(item_id),
                "prompt": entry["caption"],
                **evaluate_video(frames, image_to_uint8(image), float(entry["motion_score"]), entry["caption"]),
                "video": video_path,
            }
        )
    return write_reports(out_dir, rows, {"index": os.path.abspath(index_path)})
