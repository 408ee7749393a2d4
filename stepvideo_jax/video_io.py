"""Reading the first image, writing MP4/PNG outputs, and naming output files safely.

Image preparation follows the release: RGB -> [-1, 1] float -> resize so the image covers the target
size (one side exact, aspect kept, sizes rounded) with antialiased bilinear resampling -> centre crop.
Videos go out as H.264 (yuv420p, 25 fps, crf 25 like imageio's default quality 5) through
imageio-ffmpeg, optionally through the release's light temporal denoise filter. Every file is written
to a temporary name in the output folder and renamed into place; an existing file is never replaced:
`reserve_output_paths` picks a free name and claims it first.
"""

from __future__ import annotations

import os
import re
import unicodedata
import warnings
from collections.abc import Sequence

import imageio_ffmpeg
import numpy as np
from PIL import Image, UnidentifiedImageError

from stepvideo_jax.files import atomic_path, process_alive

__all__ = [
    "DENOISE_FILTER",
    "MAX_IMAGE_PIXELS",
    "read_image",
    "cover_resize_crop",
    "synthetic_image",
    "to_uint8",
    "crop_standard_540p",
    "output_stem",
    "reserve_output_paths",
    "check_output_dir",
    "check_writable_dir",
    "remove_stale_temp_files",
    "private_path",
    "write_mp4",
    "write_png",
    "read_mp4",
]

# The release's ffmpeg video filter: a light adaptive temporal average (atadenoise) on every plane.
DENOISE_FILTER = "atadenoise=0a=0.1:0b=0.1:1a=0.1:1b=0.1"
_CRF = 25  # imageio's default quality 5 for libx264: int((1 - 5/10) * 51)
_MAX_STEM_CHARS = 50  # the release names files after prompt[:50]
# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (to keep Ctrl-C from it), which makes CPython
# run the at-fork hooks, and JAX's hook then warns that os.fork() was called in a multithreaded process.
# Without preexec_fn the child is started without those hooks (posix_spawn/vfork); Ctrl-C then reaches
# ffmpeg as well, and the writer's temporary file is removed as on any other failure.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")


# ---------------------------------------------------------------------------------------------- input
MAX_IMAGE_PIXELS = 100_000_000  # default limit on an input image's width * height, checked before decoding


def read_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file as float32 RGB in [-1, 1], shape [H, W, 3]; its size is checked from the header
    against `max_pixels` (width * height) before anything is decoded."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"image must be a path to an image file; got {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"image {path!r} is a folder (expected a PNG/JPEG/... file)")
    if not os.path.isfile(path):
        raise ValueError(f"image {path!r} does not exist (expected a PNG/JPEG/... file)")
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # PIL's own bomb check is replaced by `max_pixels` below (header only)
        im = Image.open(path)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path!r} is not a readable image file ({e})") from e
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ValueError(
            f"image {path!r} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(max_image_pixels); resize it first"
        )
    try:
        with im, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `max_pixels` applies
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)  # [H, W, 3] in [0, 255]
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path!r} is not a readable image file ({e})") from e
    return rgb / 127.5 - 1.0  # same values as ToTensor() * 2 - 1


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A deterministic colour test pattern (float32 [-1, 1], [H, W, 3]) for demos without an image."""
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    r = np.broadcast_to(x, (height, width))
    g = np.broadcast_to(y, (height, width))
    b = np.cos(3.0 * np.pi * np.sqrt(x * x + y * y)).astype(np.float32)
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def cover_resize_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes [H, W, 3] so it covers (height, width), then centre-crops to it (the release's rule).

    The side whose aspect is the tighter fit is scaled exactly; the other is rounded and cropped
    (top = excess // 2). Resampling is bilinear with antialiasing (PIL's, which torchvision's
    antialiased tensor resize is built to match), on the float values.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [height, width, 3]; got shape {image.shape}")
    h, w = image.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"image must be non-empty; got {h}x{w}")
    scale = width / w if (w / h) < (width / height) else height / h
    new_h, new_w = int(round(h * scale)), int(round(w * scale))
    # Rounding may leave the exact side one pixel short of the target; the release asserts it cannot.
    new_h, new_w = max(new_h, height), max(new_w, width)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)).resize(
                (new_w, new_h), Image.Resampling.BILINEAR
            )
        )
        for c in range(3)
    ]
    resized = np.stack(channels, axis=-1)  # [new_h, new_w, 3]
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width].astype(np.float32)


# --------------------------------------------------------------------------------------------- output
def to_uint8(video: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 as released: clamp, (x + 1) * 127.5, truncate."""
    v = (np.clip(np.asarray(video, np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.clip(v, 0, 255).astype(np.uint8)


def crop_standard_540p(frames: np.ndarray) -> np.ndarray:
    """The release's centre crop of [F, H, W, 3] frames to 540x960 (landscape) or 960x540 (portrait).

    Frames smaller than the standard size in either side, and square frames, are returned as is.
    """
    _, h, w, _ = frames.shape
    th, tw = (540, 960) if w > h else (960, 540) if h > w else (h, w)
    if h < th or w < tw:
        return frames
    top, left = h // 2 - th // 2, w // 2 - tw // 2
    return frames[:, top : top + th, left : left + tw]


def output_stem(prompt: str, seed: int) -> str:
    """A file-name stem from the prompt's first characters and the seed: letters/digits kept, the
    rest `_`; never contains a path separator or dots, so it cannot leave the output folder."""
    text = unicodedata.normalize("NFKC", prompt or "")[:_MAX_STEM_CHARS]
    text = "".join(ch if (ch.isalnum() or ch == "-") else "_" for ch in text)
    text = re.sub(r"_+", "_", text).strip("_-") or "video"
    return f"{text}-seed{int(seed)}"


def check_output_dir(out_dir: str) -> str:
    """Validates (without creating) an output folder path; returns it absolute."""
    if not isinstance(out_dir, str) or not out_dir:
        raise ValueError(f"output_dir must be a folder path; got {out_dir!r}")
    path = os.path.abspath(out_dir)
    probe = path
    while not os.path.exists(probe):  # the nearest existing ancestor must be a folder
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise ValueError(f"output_dir {out_dir!r} is not usable: {probe!r} is a file, not a folder")
    return path


def check_writable_dir(out_dir: str, what: str = "output_dir") -> str:
    """Creates the folder if needed and writes and deletes a probe file in it, so an unwritable
    output folder is found before any model is loaded; returns it absolute (one-line ValueError)."""
    path = check_output_dir(out_dir)
    probe = os.path.join(path, f".stepvideo-probe.pid{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"probe")
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or e
        raise ValueError(f"{what} {out_dir!r} is not writable ({reason}); choose a folder you can write to") from None
    return path


_PRIVATE = re.compile(r"^\..*\.pid(\d+)\.")  # hidden files this module writes: `.NAME.pid<PID>.…`


def private_path(out_dir: str, name: str, suffix: str = "") -> str:
    """A hidden per-process path `.NAME.pid<PID>.partSUFFIX` in `out_dir` (nothing is created)."""
    return os.path.join(out_dir, f".{name}.pid{os.getpid()}.part{suffix}")


def remove_stale_temp_files(out_dir: str) -> list[str]:
    """Removes the hidden temporary files a killed run left in `out_dir` (their process is gone);
    returns the removed paths. Files of live processes (a concurrent run) are kept."""
    if not os.path.isdir(out_dir):
        return []
    removed = []
    for name in os.listdir(out_dir):
        m = _PRIVATE.match(name)
        path = os.path.join(out_dir, name)
        if m and not process_alive(int(m.group(1))) and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def reserve_output_paths(out_dir: str, stem: str, suffixes: Sequence[str]) -> list[str]:
    """Claims `stem.suffix` (or `stem-2.suffix`, `stem-3.suffix`, ...) for every suffix, creating
    empty placeholders atomically so nothing existing is ever overwritten; returns the paths."""
    if os.sep in stem or (os.altsep and os.altsep in stem) or stem in ("", ".", ".."):
        raise ValueError(f"output file stem {stem!r} must be a plain file name")
    out_dir = check_output_dir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for n in range(1, 10_000):
        name = stem if n == 1 else f"{stem}-{n}"
        paths = [os.path.join(out_dir, name + s) for s in suffixes]
        claimed = []
        try:
            for p in paths:
                os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                claimed.append(p)
            return paths
        except FileExistsError:
            for p in claimed:
                os.remove(p)
    raise ValueError(f"no free output name for {stem!r} in {out_dir!r} after 9999 tries")


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [frames, height, width, 3]; got {frames.dtype} {frames.shape}")
    if frames.shape[0] < 1 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 (yuv420p) needs >= 1 frame and even height/width; got {frames.shape[:3]}")


def write_mp4(path: str, frames: np.ndarray, *, fps: int = 25, denoise: bool = False) -> str:
    """Writes uint8 [F, H, W, 3] frames as H.264 to `path` (through a temporary file); returns path."""
    _check_frames(frames)
    f, h, w, _ = frames.shape
    writer = None
    # ffmpeg overwrites the temporary file, which keeps its umask mode; the pid in its name lets the next
    # run into this folder remove what a killed run left behind (remove_stale_temp_files).
    with atomic_path(path) as tmp:
        try:
            writer = imageio_ffmpeg.write_frames(
                tmp,
                (w, h),
                fps=fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                quality=None,
                macro_block_size=2,  # sizes are even; never let imageio rescale
                output_params=["-crf", str(_CRF)] + (["-vf", DENOISE_FILTER] if denoise else []),
                ffmpeg_log_level="error",
            )
            writer.send(None)
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
            writer.close()
        finally:
            if writer is not None:
                writer.close()  # on an error or interrupt: ffmpeg must stop writing `tmp` before it is removed
    return path


def write_png(path: str, image: np.ndarray) -> str:
    """Writes a uint8 [H, W, 3] image as PNG to `path` (through a temporary file); returns path."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [height, width, 3]; got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def read_mp4(path: str) -> np.ndarray:
    """All frames of a video file as uint8 [F, H, W, 3]."""
    reader = imageio_ffmpeg.read_frames(path)
    meta = reader.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8)
