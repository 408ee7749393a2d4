"""Decoding training clips with OpenCV: a fixed number of frames (a multiple of 17) at a fixed stride.

A ``.npy`` file holding uint8 RGB frames [F, H, W, 3] is read as a video too (lossless; the synthetic
demo data is stored that way)."""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["SkipItem", "read_clip", "FRAMES_PER_CHUNK"]

# The VAE encodes chunks of 17 frames into 3 latent frames.
FRAMES_PER_CHUNK = 17


class SkipItem(Exception):
    """A data item that cannot be used (unreadable, too short, no caption); ``reason`` is a short key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_clip(path: str | os.PathLike, num_frames: int, stride: int = 1, start: int = 0) -> np.ndarray:
    """Frames start, start+stride, ... (num_frames of them) as RGB uint8 [F, H, W, 3].

    Raises ``SkipItem("unreadable", ...)`` if the file cannot be opened or decoded and
    ``SkipItem("too_short", ...)`` if it has fewer frames than the clip needs.
    """
    if num_frames <= 0 or num_frames % FRAMES_PER_CHUNK:
        raise ValueError(f"num_frames must be a positive multiple of {FRAMES_PER_CHUNK}; got {num_frames}")
    if stride < 1 or start < 0:
        raise ValueError(f"stride must be >= 1 and start >= 0; got stride={stride}, start={start}")
    path = os.fspath(path)
    if path.endswith(".npy"):
        return _read_npy_clip(path, num_frames, stride, start)
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SkipItem("unreadable", f"cannot open {path!r}")
    frames = []
    try:
        needed_last = start + (num_frames - 1) * stride
        index = 0
        while len(frames) < num_frames:
            if not cap.grab():
                break
            if index >= start and (index - start) % stride == 0:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise SkipItem("unreadable", f"cannot decode frame {index} of {path!r}")
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    if not frames and index == 0:
        raise SkipItem("unreadable", f"no decodable frames in {path!r}")
    if len(frames) < num_frames:
        raise SkipItem("too_short", f"{path!r} has {index} frames; the clip needs {needed_last + 1}")
    return np.stack(frames)


def _read_npy_clip(path: str, num_frames: int, stride: int, start: int) -> np.ndarray:
    try:
        frames = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise SkipItem("unreadable", f"cannot read {path!r} ({e})") from None
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise SkipItem(
            "unreadable", f"{path!r} holds {frames.dtype} {frames.shape}; expected uint8 (frames, height, width, 3)"
        )
    needed_last = start + (num_frames - 1) * stride
    if frames.shape[0] <= needed_last:
        raise SkipItem("too_short", f"{path!r} has {frames.shape[0]} frames; the clip needs {needed_last + 1}")
    return np.ascontiguousarray(frames[start : needed_last + 1 : stride])
