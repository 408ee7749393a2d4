"""Image-to-video metrics: pure functions over uint8 frames [F, H, W, 3] (no model, no files).

Metrics of one video given its input image, requested motion score and caption:

- ``psnr`` / ``ssim``: frame 0 against the input image (scikit-image, data_range=255, SSIM over the
  RGB channels). Identical images have infinite PSNR; it is capped at ``PSNR_MAX_DB`` so that means
  and JSON stay finite (a generated frame never comes near it).
- ``measured_motion``: ``stepvideo_jax.motion.motion_score_from_frames(frames[::SAMPLE_EVERY])``, the
  same code that scored the training videos, next to the ``requested_motion``.
- ``smoothness``: mean |x[t+1] - 2 x[t] + x[t-1]| over all pixels, channels and t = 1..F-2, with x in
  [0, 1] (temporal acceleration; lower = smoother; 0 for a static video or a linear fade);
  ``frame_diff``: mean |x[t+1] - x[t]| (how much changes per frame at all).
- ``direction``: the displacement of the fastest-moving content from the first to the last frame,
  chained over ``DIRECTION_PAIRS`` consecutive pairs of frames ``linspace(0, F - 1, DIRECTION_PAIRS + 1)``
  (short hops keep long travels within the flow's reach). Each pair: Farneback flow (the motion
  score's parameters and working size, shorter side ``WORK_SHORT_SIDE`` = 256 px) on each RGB channel
  alone, the mean flow vector over that channel's top-10 % pixels by magnitude, and of the three the
  longest (the channel the moving content stands out in: grey alone loses a shape whose grey level is
  near its background's, e.g. yellow on (205, 205, 205) or blue on mid-grey). The summed vector (``flow_dx``,
  ``flow_dy``, working pixels, x right / y down) is labelled by its dominant axis and sign
  (left/right/up/down), or "none" when its length is below ``DIRECTION_MIN_FLOW``.
  ``direction_match`` = direction == the caption's direction word (``synthetic.direction_of_caption``);
  None when the caption names no direction. On 200 rendered clips of the v2 demo data (motion score > 5,
  low-contrast ones scored on a dark proxy) this reads 139 of 142 directions; grey flow from the first to
  the last frame alone (the rule before 2026-12-02) read 105. On clips whose motion grey flow does see,
  the two agree (v1 backgrounds 199 vs 200 of 205, v2 139 vs 136 of 141).

Aggregates (``summarize``) over prompts (a prompt = one image + caption, generated at several motion
scores with the same seed): mean/min PSNR and SSIM over all videos; the fraction of prompts (with >= 2
requested scores) whose measured motion rises strictly with the requested score; the direction accuracy
over prompts whose caption names a direction, measured on each prompt's video at its HIGHEST requested
score (the clearest motion); mean smoothness and frame_diff; the mean measured motion per requested score.

Imports only NumPy, OpenCV, scikit-image, the motion score and the synthetic captions' vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stepvideo_jax.data.synthetic import direction_of_caption
from stepvideo_jax.motion import SAMPLE_EVERY, TOP_FRACTION, dense_flow, motion_score_from_frames, to_work_gray

__all__ = [
    "PSNR_MAX_DB",
    "DIRECTION_MIN_FLOW",
    "DIRECTION_PAIRS",
    "check_video",
    "first_frame_fidelity",
    "motion_direction",
    "smoothness",
    "evaluate_video",
    "summarize",
    "image_to_uint8",
]

PSNR_MAX_DB = 100.0
DIRECTION_MIN_FLOW = 1.0  # working-size pixels (shorter side 256) travelled from first to last frame
DIRECTION_PAIRS = 4  # consecutive frame pairs the displacement is chained over


def check_video(frames: np.ndarray) -> None:
    """Raises ValueError unless `frames` is a uint8 [frames, height, width, 3] array."""
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
        raise ValueError(
            f"frame and image must both be uint8 [H, W, 3] of one size; got {frame.dtype} {frame.shape} "
            f"and {image.dtype} {image.shape}"
        )
    if np.array_equal(frame, image):
        psnr = PSNR_MAX_DB  # mse 0: infinite
    else:
        psnr = min(float(peak_signal_noise_ratio(image, frame, data_range=255)), PSNR_MAX_DB)
    ssim = float(structural_similarity(image, frame, data_range=255, channel_axis=-1))
    return psnr, ssim


def _pair_displacement(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """[2] (dx, dy): the top-10 % mean flow vector of the RGB channel in which it is longest."""
    best = np.zeros(2)
    for channel in range(3):
        a, b = (to_work_gray(np.ascontiguousarray(f[..., channel])) for f in (prev, nxt))
        flow = dense_flow(a, b)  # [h, w, 2]
        vectors = flow.reshape(-1, 2).astype(np.float64)  # [pixels, (dx, dy)]
        mag = np.hypot(vectors[:, 0], vectors[:, 1])
        k = max(1, int(round(TOP_FRACTION * mag.size)))
        mean = vectors[np.argpartition(mag, mag.size - k)[mag.size - k :]].mean(axis=0)
        if np.hypot(*mean) > np.hypot(*best):
            best = mean
    return best


def motion_direction(frames: np.ndarray) -> tuple[str, float, float]:
    """(label, dx, dy): the content's displacement from the first to the last frame (working pixels,
    x right, y down; module docstring), labelled left/right/up/down by its dominant axis, or "none" if
    shorter than DIRECTION_MIN_FLOW."""
    check_video(frames)
    if frames.shape[0] < 2:
        raise ValueError(f"direction needs at least 2 frames; got {frames.shape[0]}")
    stops = np.unique(np.rint(np.linspace(0, frames.shape[0] - 1, DIRECTION_PAIRS + 1)).astype(int))
    dx, dy = sum(_pair_displacement(frames[a], frames[b]) for a, b in zip(stops, stops[1:]))
    if math.hypot(dx, dy) < DIRECTION_MIN_FLOW:
        return "none", float(dx), float(dy)
    if abs(dx) >= abs(dy):
        return ("right" if dx > 0 else "left"), float(dx), float(dy)
    return ("down" if dy > 0 else "up"), float(dx), float(dy)


def smoothness(frames: np.ndarray) -> tuple[float, float]:
    """(mean |x[t+1] - 2x[t] + x[t-1]|, mean |x[t+1] - x[t]|) with x in [0, 1]; lower = smoother."""
    check_video(frames)
    if frames.shape[0] < 3:
        raise ValueError(f"smoothness needs at least 3 frames; got {frames.shape[0]}")
    x = lambda t: frames[t].astype(np.float32) / 255.0  # noqa: E731  one frame at a time: long videos stay small
    second = sum(float(np.abs(x(t + 1) - 2 * x(t) + x(t - 1)).mean()) for t in range(1, frames.shape[0] - 1))
    first = sum(float(np.abs(x(t + 1) - x(t)).mean()) for t in range(frames.shape[0] - 1))
    return second / (frames.shape[0] - 2), first / (frames.shape[0] - 1)


def evaluate_video(frames: np.ndarray, image: np.ndarray, requested_motion: float, caption: str) -> dict[str, Any]:
    """All per-video metrics (see the module docstring) of uint8 frames [F, H, W, 3] given the uint8
    input image [H, W, 3], the requested motion score and the caption."""
    check_video(frames)
    if frames.shape[0] < SAMPLE_EVERY + 1:
        raise ValueError(
            f"evaluation needs >= {SAMPLE_EVERY + 1} frames (two motion-score samples); got {frames.shape[0]}"
        )
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
            monotonic += all(
                m1 > m0 and q1 > q0 for m0, m1, q0, q1 in zip(measured, measured[1:], requested, requested[1:])
            )
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
        "measured_motion_by_requested": {f"{k:g}": float(np.mean(v)) for k, v in sorted(by_score.items())},
    }
