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

As a pod job (``scripts/tpu_launch.sh``, or ``python -m stepvideo_jax.tools.launch --processes=N -- python
-m stepvideo_jax.tools.precompute ...``) every process encodes every N-th manifest item (item i keeps
its name and its random stream ``fold_in(seed, i)``, so the files equal a one-process run's), writes its
rows to ``OUT/index.jsonl.part-I-of-N``, and after a barrier process 0 merges the parts into the one
``index.jsonl`` (in item order), writes ``null_prompt.npz`` and removes the parts.
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
from stepvideo_jax.files import atomic_path, write_jsonl_atomic, write_text_atomic
from stepvideo_jax.motion import motion_score
from stepvideo_jax.training.loop import NULL_PROMPT_FILE

__all__ = ["precompute", "INDEX_FILE"]

INDEX_FILE = "index.jsonl"


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def _part_path(out_dir: str, index: int, count: int) -> str:
    return os.path.join(out_dir, f"{INDEX_FILE}.part-{index}-of-{count}")


def _process_barrier() -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("stepvideo_precompute_parts")


def precompute(
    manifest: str,
    out_dir: str,
    encoder,
    *,
    num_frames: int,
    frame_stride: int,
    buckets,
    seed: int = 0,
    null_prompt: str = "",
    process_index: int | None = None,
    process_count: int | None = None,
    barrier=None,
) -> dict[str, int]:
    """Encodes every usable item of ``manifest`` with ``encoder`` (a ``training.encode.ClipEncoder``).

    With several JAX processes each encodes its share (items ``process_index::process_count``) and
    process 0 writes the one index after ``barrier()`` (all processes' parts written; default: a
    multi-host barrier). Returns the counts of the whole job on process 0, of this process's share on
    the others."""
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= pi < pc:
        raise ValueError(f"process index {pi} is outside [0, {pc})")
    entries = read_manifest(manifest)
    loader = VideoLoader(num_frames, frame_stride, parse_buckets(buckets), default_motion_score=0.0)
    os.makedirs(os.path.join(out_dir, "items"), exist_ok=True)
    key = jax.random.key(seed)
    index, skipped = [], collections.Counter()
    for i, entry in enumerate(entries):
        if i % pc != pi:
            continue
        try:
            _, example = loader(entry)
        except SkipItem as e:
            skipped[e.reason] += 1
            logging.warning("skipping %s (%s): %s", entry["video"], e.reason, e.detail)
            continue
        score = entry["motion_score"]
        if score is None:
            score = motion_score(entry["video"])
        batch = {
            "video": example["video"][None],
            "caption": [example["caption"]],
            "motion_score": np.asarray([score], np.float32),
        }
        arrays = {k: v[0] for k, v in encoder(batch, jax.random.fold_in(key, i)).items()}
        name = os.path.join("items", f"{i:06d}.npz")
        _save_npz(os.path.join(out_dir, name), arrays)
        index.append(
            {"latents": name, "caption": example["caption"], "motion_score": float(score), "video": entry["video"]}
        )
    if pc > 1:
        part = {"rows": index, "skipped": dict(skipped)}
        write_text_atomic(_part_path(out_dir, pi, pc), json.dumps(part, ensure_ascii=False))
        (barrier or _process_barrier)()
        if pi != 0:
            return {"written": len(index), **{f"skipped_{k}": v for k, v in sorted(skipped.items())}}
        index, skipped = [], collections.Counter()
        for part_index in range(pc):
            with open(_part_path(out_dir, part_index, pc), encoding="utf-8") as f:
                part = json.load(f)
            index += part["rows"]
            skipped.update(part["skipped"])
        index.sort(key=lambda row: row["latents"])  # items/NNNNNN.npz: manifest order
    _save_npz(os.path.join(out_dir, NULL_PROMPT_FILE), encoder.null_text(null_prompt))
    write_jsonl_atomic(os.path.join(out_dir, INDEX_FILE), index)
    for part_index in range(pc if pc > 1 else 0):
        os.remove(_part_path(out_dir, part_index, pc))
    counts = {"written": len(index), **{f"skipped_{k}": v for k, v in sorted(skipped.items())}}
    logging.info("precompute: %s", counts)
    return counts


def main(argv):
    del argv
    f = flags.FLAGS
    from stepvideo_jax import distributed

    # A pod job (or tools.launch): every process must run the same flags, or all stop with one line.
    distributed.start({name: f[name].value for name in _FLAG_NAMES}, what="precompute flags")
    try:
        counts = _run(f)
    except (ValueError, FileNotFoundError) as e:  # the CLI boundary: one line, exit 1
        raise SystemExit(f"error: {e}") from None
    if distributed.is_main_process():
        print(f"precompute: {counts} -> {f.out}", file=sys.stdout)
        if not counts["written"]:
            reasons = ", ".join(f"{k.removeprefix('skipped_')}: {v}" for k, v in counts.items() if k != "written")
            raise SystemExit(
                f"error: precompute wrote nothing: every clip of {f.manifest} was skipped ({reasons or 'no entries'}); "
                f"clips need at least --num_frames={f.num_frames} frames (x --frame_stride={f.frame_stride}) and a caption"
            )


def _run(f):
    from stepvideo_jax import video_io
    from stepvideo_jax.components import check_checkpoint_dir, prompt_encoder_from_checkpoint, restore_component
    from stepvideo_jax.training.encode import ClipEncoder
    from stepvideo_jax.training.objective import ObjectiveConfig

    # Inputs and the output folder are checked before the encoders load.
    if not os.path.isfile(f.manifest):
        raise ValueError(f"manifest {f.manifest!r} does not exist (expected JSONL, one video object per line)")
    read_manifest(f.manifest)
    video_io.check_writable_dir(f.out, "--out")
    check_checkpoint_dir(f.checkpoint)
    encoder = ClipEncoder(
        restore_component(f.checkpoint, "vae"), prompt_encoder_from_checkpoint(f.checkpoint), ObjectiveConfig()
    )
    return precompute(
        f.manifest,
        f.out,
        encoder,
        num_frames=f.num_frames,
        frame_stride=f.frame_stride,
        buckets=f.buckets,
        seed=f.seed,
        null_prompt=f.null_prompt,
    )


_FLAG_NAMES = ("manifest", "out", "checkpoint", "num_frames", "frame_stride", "buckets", "null_prompt", "seed")


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
