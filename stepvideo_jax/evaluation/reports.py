"""Evaluation reports: ``results.csv`` (one row per video), ``results.md`` (aggregates + per-video
table), ``summary.json``, and the contact sheet of a video (the input image, a 4-px white gap, then up
to ``SHEET_FRAMES`` evenly spaced frames from the first to the last, left to right, every tile scaled
to at most ``SHEET_MAX_HEIGHT`` px high). Files are written atomically, replacing an earlier run's."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from stepvideo_jax.evaluation.metrics import check_video, summarize
from stepvideo_jax.files import write_text_atomic

__all__ = ["CSV_COLUMNS", "SHEET_FRAMES", "SHEET_MAX_HEIGHT", "contact_sheet", "write_reports"]

SHEET_FRAMES = 8
SHEET_MAX_HEIGHT = 256
CSV_COLUMNS = (
    "category",
    "id",
    "prompt",
    "requested_motion",
    "measured_motion",
    "psnr",
    "ssim",
    "smoothness",
    "frame_diff",
    "direction",
    "expected_direction",
    "direction_match",
    "flow_dx",
    "flow_dy",
    "video",
)


def contact_sheet(image: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3]: the input image, a 4-px white gap, then up to SHEET_FRAMES evenly spaced
    frames (first to last) in one row; tiles scaled to at most SHEET_MAX_HEIGHT px high."""
    check_video(frames)
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
    os.makedirs(out_dir, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:  # floats as repr: the CSV round-trips exactly
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
    write_text_atomic(os.path.join(out_dir, "results.csv"), buf.getvalue())
    write_text_atomic(os.path.join(out_dir, "results.md"), _markdown(summary, rows))
    summary = {**summary, **(extra or {})}
    write_text_atomic(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary
