"""The synthetic generator's opt-in concept shape ("star", for the demo LoRA recipe): its outline, its data set,
its tokenization by the shipped demo tokenizers, and the default generator left byte-identical."""

import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from stepvideo_jax.data import synthetic
from stepvideo_jax.data.manifest import read_manifest

_DEMO_CKPT = os.path.join(os.path.dirname(synthetic.__file__), "..", "demo", "checkpoint")


def _inside(poly, x, y) -> bool:
    contour = np.asarray(poly, np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0


def test_star_outline_is_a_five_pointed_star():
    cx, cy, r = 32.0, 32.0, 10.0
    poly = synthetic.shape_polygon("star", (cx, cy), r)
    assert len(poly) == 10
    radii = np.hypot(*(np.asarray(poly) - (cx, cy)).T)
    outer, inner = radii[0::2], radii[1::2]
    np.testing.assert_allclose(outer, outer[0], rtol=1e-12)
    np.testing.assert_allclose(inner, inner[0], rtol=1e-12)
    assert inner[0] < 0.5 * outer[0]
    # Point-in-polygon on a circle at 80% of the outer radius (one point per degree): exactly five runs of
    # inside points, each centred on a tip (72 degrees apart, the first straight up); between tips, outside.
    angles = np.deg2rad(np.arange(360) - 90.0)
    inside = np.array([_inside(poly, cx + 0.8 * outer[0] * np.cos(a), cy + 0.8 * outer[0] * np.sin(a)) for a in angles])
    starts = np.nonzero(inside & ~np.roll(inside, 1))[0]
    assert len(starts) == 5
    arms = np.roll(inside, 36).reshape(5, 72)  # each row: 36 degrees either side of one tip
    assert arms[:, 36].all() and not arms[:, 0].any()
    widths = arms.sum(axis=1)
    assert widths.min() >= 3 and widths.max() - widths.min() <= 1
    assert _inside(poly, cx, cy)
    # Not convex: its area is well under its convex hull's (a pentagon).
    area = cv2.contourArea(np.asarray(poly, np.float32))
    hull = cv2.contourArea(cv2.convexHull(np.asarray(poly, np.float32)))
    assert area < 0.7 * hull


def test_rendered_star_fills_its_outline():
    spec = synthetic.sample_spec(
        np.random.default_rng(0), ("large", "red", "star", "right"), frames=17, height=64, width=64, max_speed=0.6
    )
    clip = synthetic.render_clip(spec, 17, 64, 64)
    frame = clip[0].astype(np.int32)
    mask = (frame[..., 0] > 150) & (frame[..., 1] < 120)
    area = cv2.contourArea(np.asarray(synthetic.shape_polygon("star", spec.start, spec.radius), np.float32))
    assert abs(mask.sum() - area) < 0.15 * area
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - spec.start[0]) < 1.0
    assert synthetic.direction_of_caption(spec.caption) == "right"
    assert spec.caption == "a large red star moves right"


def test_default_generator_unchanged():
    # The default vocabulary has no concept shape, so the demo's tokenizers, captions and data stay as shipped.
    assert "star" not in " ".join(synthetic.captions_for_tokenizer())
    assert len(synthetic.all_captions()) == 144 and synthetic.SHAPES == ("circle", "square", "triangle")
    h = hashlib.sha256()
    for shape in synthetic.SHAPES:
        spec = synthetic.sample_spec(
            np.random.default_rng(5), ("large", "purple", shape, "left"), frames=3, height=32, width=48, max_speed=0.6
        )
        h.update(synthetic.render_clip(spec, 3, 32, 48).tobytes())
    # Pinned from the generator before the concept option existed (commit 5d7a284).
    assert h.hexdigest() == "a4aee40e999a09c0610af89f054655f2654beafa225ae80477faf3cf9f5d2f44"


def test_concept_dataset_holds_out_star_prompts_and_replays_original_captions(tmp_path):
    out = str(tmp_path)
    summary = synthetic.write_concept_dataset(
        out, num_concept=4, num_replay=2, num_heldout=10, frames=13, height=32, width=32
    )
    assert summary["heldout"] == 10 and summary["concept_train_captions"] == 38
    entries = read_manifest(os.path.join(out, "manifest.jsonl"))
    captions = [e["caption"] for e in entries]
    assert len(captions) == 6 and sum(" star " in c for c in captions) == 4
    _, original_held = synthetic.split_captions(20, 0)
    assert not {synthetic.caption_of(*c) for c in original_held} & set(captions)
    held_dir = os.path.join(out, "heldout", synthetic.CONCEPT_CATEGORY)
    held = [open(os.path.join(held_dir, f"{i:03d}.txt")).read().strip() for i in range(10)]
    assert all(" star " in c for c in held) and not set(held) & set(captions)
    assert all(os.path.isfile(os.path.join(held_dir, f"{i:03d}.png")) for i in range(10))
    with open(os.path.join(out, "heldout", "heldout.jsonl")) as f:
        assert [json.loads(line)["caption"] for line in f] == held
    # Every direction is held out at least once or trained: the held-out captions name all four.
    assert {synthetic.direction_of_caption(c) for c in held} <= set(synthetic.DIRECTIONS)


def test_concept_shape_is_checked():
    with pytest.raises(ValueError, match="unknown concept shape 'hexagon'"):
        synthetic.concept_captions("hexagon")
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        synthetic.shape_polygon("hexagon", (0, 0), 1)


def test_shipped_tokenizers_split_star_into_known_pieces():
    from stepvideo_jax.text.tokenizers import ClipTokenizer, StepTokenizer

    step = StepTokenizer(os.path.join(_DEMO_CKPT, "step_llm", "tokenizer"))
    pieces = step.tokenize("star")
    assert pieces and 0 not in pieces  # sentencepiece's <unk> is id 0
    assert step.tokenize("a large red star moves left") != step.tokenize("a large red square moves left")
    clip = ClipTokenizer(os.path.join(_DEMO_CKPT, "hunyuan_clip"))
    ids, mask = clip("a large red star moves left")
    unk = clip._tok.unk_token_id
    assert unk not in ids[0][mask[0] == 1].tolist()
