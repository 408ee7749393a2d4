"""Resolution buckets: each clip is resized to cover and centre-cropped to the bucket nearest its aspect."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["parse_buckets", "choose_bucket", "resize_center_crop", "bucket_key"]


def parse_buckets(buckets: Sequence[Sequence[int]] | str, multiple: int = 16) -> tuple[tuple[int, int], ...]:
    """(height, width) pairs, each a multiple of ``multiple`` (the VAE's spatial compression)."""
    if isinstance(buckets, str):  # "544x992,768x768"
        buckets = [tuple(int(v) for v in b.lower().split("x")) for b in buckets.split(",") if b.strip()]
    out = []
    for b in buckets:
        if len(b) != 2 or b[0] <= 0 or b[1] <= 0 or b[0] % multiple or b[1] % multiple:
            raise ValueError(f"a bucket must be (height, width), both positive multiples of {multiple}; got {tuple(b)}")
        out.append((int(b[0]), int(b[1])))
    if not out:
        raise ValueError("at least one resolution bucket is needed, e.g. [(544, 992)]")
    return tuple(out)


def bucket_key(bucket: tuple[int, int]) -> str:
    return f"{bucket[0]}x{bucket[1]}"


def choose_bucket(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log ratio) to height/width; ties go to the first."""
    aspect = math.log(height / width)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """[F, H, W, 3] uint8 -> [F, height, width, 3]: scale so the frame covers the target, crop the centre."""
    f, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    top, left = (rh - height) // 2, (rw - width) // 2
    out = np.empty((f, height, width, frames.shape[-1]), frames.dtype)
    for i in range(f):
        resized = cv2.resize(frames[i], (rw, rh), interpolation=interp)
        out[i] = resized[top : top + height, left : left + width]
    return out
