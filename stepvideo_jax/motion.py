"""Motion score of a video: how far its content moves, from OpenCV dense optical flow.

The Step-Video-TI2V paper conditions the model on a motion score computed from optical flow: frames
sampled every 12 frames, converted to grayscale, Farneback dense flow between consecutive samples,
and the largest flow magnitudes averaged. The exact rule used here:

1. Take frames 0, 12, 24, ... of the video (``SAMPLE_EVERY = 12``); at least two are needed.
2. Convert each to grayscale and resize it so that its **shorter side is ``WORK_SHORT_SIDE = 256``
   pixels** (aspect ratio kept, ``cv2.INTER_AREA``). Flow is measured in pixels of this working size,
   so the same video at 256p, 512p or 1080p gets the same score.
3. For each consecutive pair of samples, compute Farneback dense flow (``FARNEBACK_PARAMS`` parameters,
   5 pyramid levels so that displacements of tens of working pixels are still tracked) and the
   per-pixel magnitude ``sqrt(dx^2 + dy^2)``.
4. "Largest" means the **top ``TOP_FRACTION = 0.10`` (10 %) of the pixels** of that pair by magnitude
   (at least one pixel); the pair's value is the mean magnitude of those pixels.
5. The score is the mean of the pair values over all pairs.

So the score is, roughly, how many working-size pixels the fastest-moving tenth of the picture travels
in 12 frames: 0 for a static video, and linear in the speed of a translating pattern.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import cv2
import numpy as np

__all__ = [
    "SAMPLE_EVERY",
    "WORK_SHORT_SIDE",
    "TOP_FRACTION",
    "FARNEBACK_PARAMS",
    "dense_flow",
    "to_work_gray",
    "motion_score",
    "motion_score_from_frames",
    "sample_frames",
]

SAMPLE_EVERY = 12
WORK_SHORT_SIDE = 256
TOP_FRACTION = 0.10
# pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags
FARNEBACK_PARAMS = (0.5, 5, 15, 3, 5, 1.2, 0)


def to_work_gray(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] RGB uint8 (or [H, W] gray) -> [h, w] float32 gray with shorter side WORK_SHORT_SIDE."""
    if frame.ndim == 3 and frame.shape[-1] == 3:
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    elif frame.ndim == 2:
        gray = frame
    else:
        raise ValueError(f"frames must be (height, width, 3) RGB or (height, width) gray; got {frame.shape}")
    h, w = gray.shape
    scale = WORK_SHORT_SIDE / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(gray, size, interpolation=interp).astype(np.float32)


def dense_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """[h, w, 2] Farneback flow (dx, dy in working pixels) between two working-size grey frames."""
    return cv2.calcOpticalFlowFarneback(prev, nxt, None, *FARNEBACK_PARAMS)


def _pair_value(prev: np.ndarray, nxt: np.ndarray) -> float:
    flow = dense_flow(prev, nxt)  # [h, w, 2]
    mag = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1])).reshape(-1)
    k = max(1, int(round(TOP_FRACTION * mag.size)))
    top = np.partition(mag, mag.size - k)[mag.size - k :]
    return float(np.mean(top, dtype=np.float64))


def motion_score_from_frames(frames: Iterable[np.ndarray]) -> float:
    """Score of already-sampled frames (consecutive entries are SAMPLE_EVERY video frames apart)."""
    values, prev = [], None
    for frame in frames:
        cur = to_work_gray(np.asarray(frame))
        if prev is not None:
            if cur.shape != prev.shape:
                raise ValueError(f"all frames must have one size; got {prev.shape} then {cur.shape} (working size)")
            values.append(_pair_value(prev, cur))
        prev = cur
    if not values:
        raise ValueError(f"a motion score needs at least 2 sampled frames (a video of >= {SAMPLE_EVERY + 1} frames)")
    return float(np.mean(values))


def sample_frames(path: str | os.PathLike, every: int = SAMPLE_EVERY) -> Iterable[np.ndarray]:
    """Yields frames 0, every, 2*every, ... of a video file as RGB uint8; raises if it cannot be opened."""
    cap = cv2.VideoCapture(os.fspath(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {os.fspath(path)!r}")
    try:
        index = 0
        while True:
            ok = cap.grab()
            if not ok:
                return
            if index % every == 0:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise ValueError(f"cannot decode frame {index} of {os.fspath(path)!r}")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def motion_score(path: str | os.PathLike) -> float:
    """Motion score of a video file (see the module docstring for the rule)."""
    return motion_score_from_frames(sample_frames(path))
