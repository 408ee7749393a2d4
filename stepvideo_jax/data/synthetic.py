"""Synthetic motion clips for the embedded demo model: one simple shape translating over a static
background, with a caption that says what moves and where.

A clip is fully described by a ``ClipSpec`` (shape, colour, size, direction, background, start, speed
in pixels per frame) and rendered deterministically by ``render_clip``: each frame is drawn at 4x the
output size with OpenCV and area-downsampled, so sub-pixel speeds move smoothly. The caption names
size, colour, shape and direction ("a large red circle moves left"), never the speed: how far the
shape travels is what the motion score conditions, and the motion scores written with the data come
from ``stepvideo_jax.motion`` (optical flow on the rendered frames), not from the speed.

Opt-in concept shapes (``CONCEPT_SHAPES``: a five-pointed "star") are drawable but not in ``SHAPES``, so the
default vocabulary, captions and data (the shipped demo's) stay as they were; ``write_concept_dataset`` writes
clips of such a shape plus a replay share of the original captions, for teaching the demo model a new word
with a LoRA (``stepvideo_jax.tools.lora_recipe``).

``write_dataset`` writes a training set (``clips/NNNNNN.npy`` uint8 [F, H, W, 3] + ``manifest.jsonl``
for ``stepvideo_jax.data``) and a held-out set whose captions never occur in training, laid out like
Step-Video-TI2V-Eval (``heldout/<category>/<ID>.png`` + ``<ID>.txt``).

Background sets (``backgrounds=``): "v1" (the shipped demo model's data: dark colours only) and
"v2" (dark, light, mid-grey and coloured, each a quarter of the clips, plain or textured as in v1).
In v2 a shape whose grey level is close to its background's is nearly invisible to the grey-level
optical flow of the motion score, so such a clip's score is measured on the same motion rendered
over a dark plain background (``motion_proxy``); v2 held-out items take a background group in turn
(light, mid-grey, dark, coloured) among those the metric can see the shape on, and v2 also writes
``checks/mid_grey_background/``: a large blue triangle on a plain (128, 128, 128) background (the
frame-0 check of a light/mid-grey input).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from typing import Any

import cv2
import numpy as np

from stepvideo_jax.data.manifest import write_manifest
from stepvideo_jax.files import atomic_path, write_jsonl_atomic, write_text_atomic
from stepvideo_jax.motion import SAMPLE_EVERY, motion_score_from_frames

__all__ = [
    "COLORS",
    "SHAPES",
    "SIZES",
    "DIRECTIONS",
    "BACKGROUNDS",
    "CONCEPT_SHAPES",
    "CONCEPT_CATEGORY",
    "ClipSpec",
    "concept_captions",
    "shape_polygon",
    "write_concept_dataset",
    "all_captions",
    "caption_of",
    "captions_for_tokenizer",
    "direction_of_caption",
    "split_captions",
    "sample_spec",
    "render_clip",
    "clip_motion_score",
    "write_dataset",
    "write_heldout",
    "HELDOUT_CATEGORY",
    "BACKGROUND_SETS",
    "BACKGROUND_GROUPS",
    "MID_GREY_CHECK",
    "motion_proxy",
]

# RGB colours of the shapes (names are the caption words).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (235, 55, 50),
    "green": (50, 200, 80),
    "blue": (70, 120, 255),
    "yellow": (240, 215, 40),
    "white": (245, 245, 245),
    "purple": (175, 85, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Shapes that only `write_concept_dataset` (or an explicit ClipSpec) uses: not in the default captions.
CONCEPT_SHAPES: tuple[str, ...] = ("star",)
_STAR_INNER = 0.45  # inner / outer radius of the star's ten-vertex outline
# Radius ranges (pixels of a 64-pixel frame; scaled with the shorter side).
SIZES: dict[str, tuple[float, float]] = {"small": (6.0, 8.0), "large": (10.0, 13.0)}
# Unit displacement per direction in image coordinates (x right, y down).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "checker", "gradient")
HELDOUT_CATEGORY = "synthetic_shapes"
CONCEPT_CATEGORY = "synthetic_concept"

_SUPERSAMPLE = 4
# Dark backgrounds: every shape colour is at least ~55 grey levels brighter, so the grey-level optical
# flow of the motion score sees the shape (a red shape on a mid-grey background is nearly invisible to it).
_BG_COLORS = np.array([(30, 30, 38), (50, 40, 30), (20, 38, 50), (45, 45, 48), (35, 48, 32), (15, 15, 20)], np.float64)
_BG_TEXTURE_DELTA = 22.0  # second background colour = first + this much (textures stay low-contrast)
BACKGROUND_SETS = ("v1", "v2")
# v2: background colour groups, each drawn for a quarter of the clips ("dark" is v1's palette).
BACKGROUND_GROUPS: dict[str, np.ndarray] = {
    "dark": _BG_COLORS,
    "light": np.array([(235, 235, 230), (220, 226, 236), (244, 238, 222), (205, 205, 205)], np.float64),
    "mid_grey": np.array([(128, 128, 128), (110, 110, 114), (146, 142, 136), (96, 98, 100)], np.float64),
    "colour": np.array([(40, 70, 140), (150, 55, 55), (55, 125, 70), (185, 150, 60), (115, 60, 130)], np.float64),
}
_HELDOUT_GROUP_ORDER = ("light", "mid_grey", "dark", "colour")
# Grey-level difference (BT.601, as cv2's RGB2GRAY) below which the motion score's flow barely sees a shape.
_MIN_GREY_CONTRAST = 40.0
_PROXY_BG = ((30, 30, 38), (30, 30, 38))  # motion_proxy's plain dark background
# The frame-0 check of v2: (caption combo, background colour), written under checks/<name>/000.png|.txt.
MID_GREY_CHECK = ("mid_grey_background", ("large", "blue", "triangle", "right"), (128, 128, 128))


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    shape: str
    color: str
    size: str
    direction: str
    background: str
    radius: float  # pixels at the output size
    start: tuple[float, float]  # (x, y) centre in frame 0, pixels
    speed: float  # pixels per frame along `direction`
    bg_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    bg_period: float  # stripe / checker period in pixels
    bg_angle: float  # stripe / gradient orientation in radians

    @property
    def caption(self) -> str:
        return caption_of(self.size, self.color, self.shape, self.direction)


def caption_of(size: str, color: str, shape: str, direction: str) -> str:
    return f"a {size} {color} {shape} moves {direction}"


_DIRECTION_WORD = re.compile(r"\b(left|right|up|down)\b")


def direction_of_caption(caption: str) -> str | None:
    """The direction word of a caption ("left", "right", "up", "down"), or None if it names none."""
    found = set(_DIRECTION_WORD.findall(caption.lower()))
    return found.pop() if len(found) == 1 else None


def all_captions() -> list[tuple[str, str, str, str]]:
    """Every (size, color, shape, direction) the generator can caption, in a fixed order."""
    return list(itertools.product(SIZES, COLORS, SHAPES, DIRECTIONS))


def concept_captions(shape: str) -> list[tuple[str, str, str, str]]:
    """Every (size, color, shape, direction) of one concept shape (every size, colour and direction)."""
    if shape not in CONCEPT_SHAPES:
        raise ValueError(f"unknown concept shape {shape!r}; expected one of {CONCEPT_SHAPES}")
    return list(itertools.product(SIZES, COLORS, (shape,), DIRECTIONS))


def split_captions(num_heldout: int, seed: int, combos: list[tuple] | None = None) -> tuple[list[tuple], list[tuple]]:
    """(training combos, held-out combos): `num_heldout` captions of `combos` (default: `all_captions()`)
    removed from training such that every size, colour, shape and direction word still occurs in training."""
    combos = all_captions() if combos is None else list(combos)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(combos))
    held: list[tuple] = []
    for i in order:
        if len(held) == num_heldout:
            break
        candidate = combos[i]
        rest = [c for c in combos if c not in held and c != candidate]
        # Keep each attribute value in at least a few training captions.
        if all(sum(1 for c in rest if c[k] == candidate[k]) >= 4 for k in range(4)):
            held.append(candidate)
    if len(held) < num_heldout:
        raise ValueError(f"cannot hold out {num_heldout} of {len(combos)} captions and keep every word in training")
    train = [c for c in combos if c not in held]
    return train, held


def sample_spec(
    rng: np.random.Generator,
    combo: tuple[str, str, str, str],
    *,
    frames: int,
    height: int,
    width: int,
    max_speed: float,
    backgrounds: str = "v1",
    bg_group: str | None = None,
) -> ClipSpec:
    """A random clip of one caption combo: background, radius, speed in [0, max_speed] and a start
    position such that the shape stays inside the frame for all `frames`. `backgrounds` picks the
    background colour set (module docstring); `bg_group` (v2 only) forces a group of
    `BACKGROUND_GROUPS`, choosing within it a colour the motion score can see the shape on."""
    if backgrounds not in BACKGROUND_SETS:
        raise ValueError(f"backgrounds must be one of {BACKGROUND_SETS}; got {backgrounds!r}")
    if bg_group is not None and (backgrounds != "v2" or bg_group not in BACKGROUND_GROUPS):
        raise ValueError(f"bg_group needs backgrounds='v2' and one of {tuple(BACKGROUND_GROUPS)}; got {bg_group!r}")
    size, color, shape, direction = combo
    scale = min(height, width) / 64.0
    radius = float(rng.uniform(*SIZES[size])) * scale
    speed = float(rng.uniform(0.0, max_speed)) * scale
    dx, dy = DIRECTIONS[direction]
    travel = speed * (frames - 1)
    margin = radius + 1.0

    # The centre's allowed start range along each axis, given the travel along that axis.
    def start_range(extent: float, d: int) -> tuple[float, float]:
        lo, hi = margin, extent - margin
        if d > 0:
            hi -= travel
        elif d < 0:
            lo += travel
        if hi < lo:
            raise ValueError(
                f"a {size} shape cannot travel {travel:.1f} px in a {height}x{width} frame; lower max_speed"
            )
        return lo, hi

    x = float(rng.uniform(*start_range(width, dx)))
    y = float(rng.uniform(*start_range(height, dy)))
    if backgrounds == "v1":  # the shipped model's draws, unchanged
        first = _BG_COLORS[int(rng.integers(len(_BG_COLORS)))]
        second = first + _BG_TEXTURE_DELTA
    else:
        first = _v2_background_colour(rng, color, bg_group)
        # Light colours get the darker second colour (stays within 0..255 and as low-contrast).
        second = first + (_BG_TEXTURE_DELTA if _grey(first) < 128 else -_BG_TEXTURE_DELTA)
    bg = (tuple(int(v) for v in first), tuple(int(v) for v in second))
    return ClipSpec(
        shape=shape,
        color=color,
        size=size,
        direction=direction,
        background=str(rng.choice(BACKGROUNDS)),
        radius=radius,
        start=(x, y),
        speed=speed,
        bg_colors=bg,
        bg_period=float(rng.uniform(12.0, 24.0)) * scale,
        bg_angle=float(rng.uniform(0, np.pi)),
    )


def _grey(rgb) -> float:
    r, g, b = (float(v) for v in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _v2_background_colour(rng: np.random.Generator, shape_colour: str, group: str | None) -> np.ndarray:
    """A v2 background colour: a random group and colour, or (`group` given) a colour of that group
    with grey contrast >= _MIN_GREY_CONTRAST to the shape (the highest-contrast one if none has)."""
    if group is None:
        palette = BACKGROUND_GROUPS[_HELDOUT_GROUP_ORDER[int(rng.integers(len(_HELDOUT_GROUP_ORDER)))]]
        return palette[int(rng.integers(len(palette)))]
    palette = BACKGROUND_GROUPS[group]
    contrast = np.array([abs(_grey(c) - _grey(COLORS[shape_colour])) for c in palette])
    visible = np.flatnonzero(contrast >= _MIN_GREY_CONTRAST)
    if len(visible) == 0:
        return palette[int(np.argmax(contrast))]
    return palette[int(visible[int(rng.integers(len(visible)))])]


def _visible_groups(shape_colour: str) -> list[str]:
    """v2 groups with at least one colour the motion score can see `shape_colour` on."""
    shape = _grey(COLORS[shape_colour])
    return [
        g
        for g in _HELDOUT_GROUP_ORDER
        if max(abs(_grey(c) - shape) for c in BACKGROUND_GROUPS[g]) >= _MIN_GREY_CONTRAST
    ]


def motion_proxy(spec: ClipSpec) -> ClipSpec | None:
    """The same motion over a dark plain background when the shape's grey level is within
    _MIN_GREY_CONTRAST of a background colour (its motion score is measured on that), else None."""
    shape = _grey(COLORS[spec.color])
    if min(abs(_grey(c) - shape) for c in spec.bg_colors) >= _MIN_GREY_CONTRAST:
        return None
    return dataclasses.replace(spec, background="plain", bg_colors=_PROXY_BG)


def _background(spec: ClipSpec, height: int, width: int) -> np.ndarray:
    """[H, W, 3] float64 static background at the supersampled size."""
    s = _SUPERSAMPLE
    yy, xx = np.mgrid[0 : height * s, 0 : width * s].astype(np.float64) / s
    a, b = (np.array(c, np.float64) for c in spec.bg_colors)
    if spec.background == "plain":
        mix = np.zeros_like(xx)
    elif spec.background == "stripes":
        u = xx * np.cos(spec.bg_angle) + yy * np.sin(spec.bg_angle)
        mix = (np.floor(u / (spec.bg_period / 2)) % 2).astype(np.float64)
    elif spec.background == "checker":
        p = spec.bg_period / 2
        mix = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float64)
    elif spec.background == "gradient":
        u = xx * np.cos(spec.bg_angle) + yy * np.sin(spec.bg_angle)
        mix = (u - u.min()) / max(u.max() - u.min(), 1e-9)
    else:
        raise ValueError(f"unknown background {spec.background!r}; expected one of {BACKGROUNDS}")
    return a * (1 - mix[..., None]) + b * mix[..., None]


def shape_polygon(shape: str, centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    """Vertices (x, y) of a polygonal shape ("square", "triangle", "star") of circumradius-like size
    `radius` around `centre` (image coordinates, y down; the triangle and star point up)."""
    cx, cy, r = centre[0], centre[1], radius
    if shape == "square":
        h = r / np.sqrt(2) * 1.25
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
    if shape == "star":
        # Five outer points alternating with five inner ones; 1.15x so its area is close to the other shapes'.
        outer = 1.15 * r
        return [
            (cx + rad * np.cos(-np.pi / 2 + k * np.pi / 5), cy + rad * np.sin(-np.pi / 2 + k * np.pi / 5))
            for k, rad in enumerate([outer, outer * _STAR_INNER] * 5)
        ]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES + CONCEPT_SHAPES}")


def _draw_shape(canvas: np.ndarray, spec: ClipSpec, centre: tuple[float, float]) -> None:
    s = _SUPERSAMPLE
    cx, cy, r = centre[0] * s, centre[1] * s, spec.radius * s
    color = tuple(float(c) for c in COLORS[spec.color])
    shift = 4  # cv2 sub-pixel coordinates: integers in units of 1/16 pixel
    f = float(1 << shift)
    if spec.shape == "circle":
        cv2.circle(canvas, (int(round(cx * f)), int(round(cy * f))), int(round(r * f)), color, -1, cv2.LINE_AA, shift)
        return
    pts = shape_polygon(spec.shape, (cx, cy), r)
    poly = np.array([[int(round(x * f)), int(round(y * f))] for x, y in pts], np.int32)
    cv2.fillPoly(canvas, [poly], color, cv2.LINE_AA, shift)


def render_clip(spec: ClipSpec, frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [frames, height, width, 3] RGB: the shape at start + t * speed * direction in frame t."""
    background = _background(spec, height, width)
    dx, dy = DIRECTIONS[spec.direction]
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        canvas = background.copy()
        _draw_shape(canvas, spec, (spec.start[0] + dx * spec.speed * t, spec.start[1] + dy * spec.speed * t))
        small = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
        out[t] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out


def clip_motion_score(frames: np.ndarray) -> float:
    """The motion score of rendered frames, with the same code as for real training videos."""
    return motion_score_from_frames(frames[::SAMPLE_EVERY])


def write_dataset(
    out_dir: str,
    *,
    num_train: int,
    num_heldout: int,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    max_speed: float = 0.6,
    seed: int = 0,
    backgrounds: str = "v1",
) -> dict[str, Any]:
    """Writes ``out_dir/clips/*.npy`` + ``out_dir/manifest.jsonl`` (training) and
    ``out_dir/heldout/<category>/<ID>.png|.txt`` + ``out_dir/heldout/heldout.jsonl`` (one clip per
    held-out caption, with its spec, for reference); v2 also the ``out_dir/checks`` folder. Returns a
    summary with the motion-score range."""
    if backgrounds not in BACKGROUND_SETS:
        raise ValueError(f"backgrounds must be one of {BACKGROUND_SETS}; got {backgrounds!r}")
    if num_train < 1 or num_heldout < 0:
        raise ValueError(f"num_train must be >= 1 and num_heldout >= 0; got {num_train}, {num_heldout}")
    train_combos, held_combos = split_captions(num_heldout, seed)
    rng = np.random.default_rng(seed)
    clips_dir = os.path.join(out_dir, "clips")
    held_dir = os.path.join(out_dir, "heldout", HELDOUT_CATEGORY)
    os.makedirs(clips_dir, exist_ok=True)
    os.makedirs(held_dir, exist_ok=True)
    entries = []
    proxied = 0
    for i in range(num_train):
        combo = train_combos[int(rng.integers(len(train_combos)))]
        spec = sample_spec(
            rng, combo, frames=frames, height=height, width=width, max_speed=max_speed, backgrounds=backgrounds
        )
        proxy = motion_proxy(spec) if backgrounds == "v2" else None
        proxied += proxy is not None
        entries.append(_write_clip(out_dir, i, spec, frames, height, width, proxy=proxy))
    scores = [e.pop("motion_score_raw") for e in entries]
    write_manifest(os.path.join(out_dir, "manifest.jsonl"), entries)
    held = _write_heldout_items(
        out_dir,
        rng,
        held_combos,
        frames=frames,
        height=height,
        width=width,
        max_speed=max_speed,
        backgrounds=backgrounds,
    )
    s = np.asarray(scores)
    return {
        "train": num_train,
        "backgrounds": backgrounds,
        "motion_scores_on_proxy": proxied,
        "heldout": len(held),
        "train_captions": len(train_combos),
        "motion_score_min": float(s.min()),
        "motion_score_median": float(np.median(s)),
        "motion_score_max": float(s.max()),
    }


def _write_clip(
    out_dir: str, index: int, spec: ClipSpec, frames: int, height: int, width: int, proxy: ClipSpec | None = None
) -> dict:
    """Renders and saves one training clip; its manifest entry (+ "motion_score_raw", unrounded). The
    motion score is measured on `proxy`'s render when given (the same motion where the clip's own
    contrast hides it from the grey-level flow)."""
    clip = render_clip(spec, frames, height, width)
    score = clip_motion_score(clip if proxy is None else render_clip(proxy, frames, height, width))
    name = os.path.join("clips", f"{index:06d}.npy")
    with atomic_path(os.path.join(out_dir, name)) as tmp:
        np.save(tmp, clip)
    return {
        "video": name,
        "caption": spec.caption,
        "motion_score": round(score, 4),
        "speed": round(spec.speed, 4),
        "direction": spec.direction,
        "motion_score_raw": score,
    }


def _heldout_groups(held_combos) -> list[str | None]:
    """v2: each held-out item's background group, in turn over light, mid-grey, dark, coloured, each
    item taking the least-used group among those its shape colour is visible on."""
    used = dict.fromkeys(_HELDOUT_GROUP_ORDER, 0)
    groups = []
    for _, color, _, _ in held_combos:
        group = min(_visible_groups(color) or list(_HELDOUT_GROUP_ORDER), key=lambda g: used[g])
        used[group] += 1
        groups.append(group)
    return groups


def _write_frame0_item(folder: str, item_id: str, spec: ClipSpec, height: int, width: int) -> None:
    os.makedirs(folder, exist_ok=True)
    first = render_clip(spec, 1, height, width)[0]
    with atomic_path(os.path.join(folder, f"{item_id}.png")) as tmp:
        cv2.imwrite(tmp, cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
    write_text_atomic(os.path.join(folder, f"{item_id}.txt"), spec.caption + "\n")


def _write_heldout_items(
    out_dir: str,
    rng: np.random.Generator,
    held_combos,
    *,
    frames: int,
    height: int,
    width: int,
    max_speed: float,
    category: str = HELDOUT_CATEGORY,
    backgrounds: str = "v1",
) -> list[dict]:
    held_dir = os.path.join(out_dir, "heldout", category)
    os.makedirs(held_dir, exist_ok=True)
    groups = _heldout_groups(held_combos) if backgrounds == "v2" else [None] * len(held_combos)
    held = []
    for j, (combo, group) in enumerate(zip(held_combos, groups)):
        spec = sample_spec(
            rng,
            combo,
            frames=frames,
            height=height,
            width=width,
            max_speed=max_speed,
            backgrounds=backgrounds,
            bg_group=group,
        )
        item_id = f"{j:03d}"
        _write_frame0_item(held_dir, item_id, spec, height, width)
        extra = {} if group is None else {"bg_group": group}
        held.append({"id": item_id, "caption": spec.caption, **dataclasses.asdict(spec), **extra})
    write_jsonl_atomic(os.path.join(out_dir, "heldout", "heldout.jsonl"), held, ensure_ascii=True)
    if backgrounds == "v2":
        name, combo, colour = MID_GREY_CHECK
        spec = sample_spec(
            np.random.default_rng(0), combo, frames=frames, height=height, width=width, max_speed=max_speed
        )
        spec = dataclasses.replace(spec, background="plain", bg_colors=(colour, colour))
        _write_frame0_item(os.path.join(out_dir, "checks", name), "000", spec, height, width)
    return held


def write_heldout(
    out_dir: str,
    *,
    num_train: int,
    num_heldout: int,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    max_speed: float = 0.6,
    seed: int = 0,
    backgrounds: str = "v1",
) -> dict[str, Any]:
    """Only the held-out part of `write_dataset` with the same arguments (``out_dir/heldout/...``,
    identical files): the training clips' random draws are replayed without rendering or writing
    them, so this takes a second where the whole dataset takes minutes and hundreds of MB."""
    if num_train < 1 or num_heldout < 0:
        raise ValueError(f"num_train must be >= 1 and num_heldout >= 0; got {num_train}, {num_heldout}")
    train_combos, held_combos = split_captions(num_heldout, seed)
    rng = np.random.default_rng(seed)
    for _ in range(num_train):  # the same draws as write_dataset's training loop
        combo = train_combos[int(rng.integers(len(train_combos)))]
        sample_spec(rng, combo, frames=frames, height=height, width=width, max_speed=max_speed, backgrounds=backgrounds)
    held = _write_heldout_items(
        out_dir,
        rng,
        held_combos,
        frames=frames,
        height=height,
        width=width,
        max_speed=max_speed,
        backgrounds=backgrounds,
    )
    return {"heldout": len(held)}


def captions_for_tokenizer() -> list[str]:
    """Every caption the generator can produce (training and held-out), for the tokenizer's vocabulary."""
    return [caption_of(*c) for c in all_captions()]


def write_concept_dataset(
    out_dir: str,
    *,
    shape: str = "star",
    num_concept: int,
    num_replay: int,
    num_heldout: int = 10,
    base_num_heldout: int = 20,
    base_seed: int = 0,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    max_speed: float = 0.6,
    seed: int = 1,
    backgrounds: str = "v1",
) -> dict[str, Any]:
    """A dataset that teaches a concept shape (`CONCEPT_SHAPES`): `num_concept` clips of the shape (every
    size, colour and direction, minus `num_heldout` captions written as held-out prompts under
    ``out_dir/heldout/<CONCEPT_CATEGORY>``) mixed with `num_replay` clips of the original training captions
    (those of ``write_dataset(num_heldout=base_num_heldout, seed=base_seed)``, so the original held-out
    captions stay unseen). Same files as `write_dataset` (``clips/``, ``manifest.jsonl``, ``heldout/``).
    `backgrounds` is the base model's background set (as `write_dataset`'s), for every clip and held-out item."""
    if backgrounds not in BACKGROUND_SETS:
        raise ValueError(f"backgrounds must be one of {BACKGROUND_SETS}; got {backgrounds!r}")
    if num_concept < 1 or num_replay < 0 or num_heldout < 0:
        raise ValueError(
            f"num_concept must be >= 1, num_replay and num_heldout >= 0; got {num_concept}, {num_replay}, {num_heldout}"
        )
    concept_train, concept_held = split_captions(num_heldout, seed, concept_captions(shape))
    replay_train, _ = split_captions(base_num_heldout, base_seed)
    rng = np.random.default_rng(seed)
    is_concept = np.array([True] * num_concept + [False] * num_replay)
    rng.shuffle(is_concept)
    os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
    entries = []
    for i, concept in enumerate(is_concept):
        pool = concept_train if concept else replay_train
        combo = pool[int(rng.integers(len(pool)))]
        spec = sample_spec(
            rng, combo, frames=frames, height=height, width=width, max_speed=max_speed, backgrounds=backgrounds
        )
        proxy = motion_proxy(spec) if backgrounds == "v2" else None
        entries.append(_write_clip(out_dir, i, spec, frames, height, width, proxy=proxy))
    scores = np.asarray([e.pop("motion_score_raw") for e in entries])
    write_manifest(os.path.join(out_dir, "manifest.jsonl"), entries)
    held = _write_heldout_items(
        out_dir,
        rng,
        concept_held,
        frames=frames,
        height=height,
        width=width,
        max_speed=max_speed,
        category=CONCEPT_CATEGORY,
        backgrounds=backgrounds,
    )
    return {
        "concept_clips": num_concept,
        "replay_clips": num_replay,
        "heldout": len(held),
        "concept_train_captions": len(concept_train),
        "replay_captions": len(replay_train),
        "motion_score_min": float(scores.min()),
        "motion_score_median": float(np.median(scores)),
        "motion_score_max": float(scores.max()),
    }
