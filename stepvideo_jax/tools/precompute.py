"""Precomputes training inputs so that neither the VAE nor the text encoders run during training.

    python -m stepvideo_jax.tools.precompute --manifest data/manifest.jsonl --out data/latents
        --checkpoint converted/ --num_frames 102 --buckets 544x992,992x544,768x768   (one command line)

For every usable manifest item it writes ``OUT/items/NNNNNN.npz`` with, channels-last:
``latents`` [f', h, w, C] (VAE posterior sample of the clip), ``condition`` [1, h, w, C] (the first
frame with the objective's pixel-noise augmentation, drawn once per item, then VAE-encoded),
``llm_states`` [L, C_llm], ``llm_mask`` [L], ``clip_states`` [77, C_clip], ``motion_score`` [] (the
manifest's, or computed with ``stepvideo_jax.motion`` when absent); ``OUT/index.jsonl`` listing
them; and ``OUT/null_prompt.npz``, the text arrays of the prompt that replaces dropped captions.
Skipped items (unreadable, too short, no caption) are counted and summarised. Files are written to a
temporary name and renamed.
"""

from __future__ import annotations

import collections
import json
import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from stepvideo_jax.data.buckets import parse_buckets
from stepvideo_jax.data.manifest import read_manifest
from stepvideo_jax.data.pipeline import VideoLoader
from stepvideo_jax.data.video import SkipItem
from stepvideo_jax.motion import motion_score
from stepvideo_jax.training.loop import NULL_PROMPT_FILE

__all__ = ["precompute", "INDEX_FILE"]

INDEX_FILE = "index.jsonl"


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def precompute(manifest: str, out_dir: str, encoder, *, num_frames: int, frame_stride: int, buckets,
               seed: int = 0, null_prompt: str = "") -> dict[str, int]:
    """Encodes every usable item of ``manifest`` with ``encoder`` (a ``training.encode.ClipEncoder``)."""
    entries = read_manifest(manifest)
    loader = VideoLoader(num_frames, frame_stride, parse_buckets(buckets), default_motion_score=0.0)
    os.makedirs(os.path.join(out_dir, "items"), exist_ok=True)
    key = jax.random.key(seed)
    index, skipped = [], collections.Counter()
    for i, entry in enumerate(entries):
        try:
            _, example = loader(entry)
        except SkipItem as e:
            skipped[e.reason] += 1
            logging.warning("skipping %s (%s): %s", entry["video"], e.reason, e.detail)
            continue
        score = entry["motion_score"]
        if score is None:
            score = motion_score(entry["video"])
        batch = {"video": example["video"][None], "caption": [example["caption"]],
                 "motion_score": np.asarray([score], np.float32)}
        arrays = {k: v[0] for k, v in encoder(batch, jax.random.fold_in(key, i)).items()}
        name = os.path.join("items", f"{i:06d}.npz")
        _save_npz(os.path.join(out_dir, name), arrays)
        index.append({"latents": name, "caption": example["caption"], "motion_score": float(score),
                      "video": entry["video"]})
    _save_npz(os.path.join(out_dir, NULL_PROMPT_FILE), encoder.null_text(null_prompt))
    tmp = os.path.join(out_dir, f"{INDEX_FILE}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in index:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, os.path.join(out_dir, INDEX_FILE))
    counts = {"written": len(index), **{f"skipped_{k}": v for k, v in sorted(skipped.items())}}
    logging.info("precompute: %s", counts)
    return counts


def main(argv):
    del argv
    f = flags.FLAGS
    from stepvideo_jax.components import prompt_encoder_from_checkpoint, restore_component
    from stepvideo_jax.training.encode import ClipEncoder
    from stepvideo_jax.training.objective import ObjectiveConfig

    encoder = ClipEncoder(restore_component(f.checkpoint, "vae"), prompt_encoder_from_checkpoint(f.checkpoint),
                          ObjectiveConfig())
    counts = precompute(f.manifest, f.out, encoder, num_frames=f.num_frames, frame_stride=f.frame_stride,
                        buckets=f.buckets, seed=f.seed, null_prompt=f.null_prompt)
    print(f"precompute: {counts} -> {f.out}", file=sys.stdout)
    if not counts["written"]:
        reasons = ", ".join(f"{k.removeprefix('skipped_')}: {v}" for k, v in counts.items() if k != "written")
        raise SystemExit(
            f"error: precompute wrote nothing: every clip of {f.manifest} was skipped ({reasons or 'no entries'}); "
            f"clips need at least --num_frames={f.num_frames} frames (x --frame_stride={f.frame_stride}) and a caption"
        )


def _define_flags() -> None:
    """Command-line flags (defined only when run as a program, so importing this module is free)."""
    flags.DEFINE_string("manifest", None, "JSONL manifest of videos", required=True)
    flags.DEFINE_string("out", None, "output folder", required=True)
    flags.DEFINE_string("checkpoint", None, "converted checkpoint folder (VAE, text encoders)", required=True)
    flags.DEFINE_integer("num_frames", 102 // 17 * 17, "frames per clip (a multiple of 17)")
    flags.DEFINE_integer("frame_stride", 1, "take every n-th frame")
    flags.DEFINE_string("buckets", "544x992,992x544,768x768", "resolution buckets HxW,...")
    flags.DEFINE_string("null_prompt", "", "prompt whose states replace dropped captions")
    flags.DEFINE_integer("seed", 0, "seed of the VAE posterior samples and condition noise")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
