"""Scores every video in a folder with the motion score and writes the scores into a JSONL manifest.

    python -m stepvideo_jax.tools.motion_scores VIDEO_DIR --manifest data/manifest.jsonl

Existing manifest entries keep their caption and other fields and get ``motion_score`` set; videos not
yet in the manifest are added (with ``caption: null`` unless they already have one). Videos that cannot
be scored are reported and left without a score.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from stepvideo_jax.data.manifest import write_manifest
from stepvideo_jax.files import read_jsonl
from stepvideo_jax.motion import motion_score

__all__ = ["VIDEO_EXTENSIONS", "score_folder"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def _relative(path: str, root: str) -> str:
    return os.path.relpath(os.path.abspath(path), root)


def score_folder(video_dir: str, manifest: str) -> dict[str, int]:
    """Scores the folder's videos into ``manifest`` (created if absent); returns counts."""
    root = os.path.dirname(os.path.abspath(manifest))
    entries: list[dict] = []
    if not os.path.isdir(video_dir):
        raise ValueError(f"video folder {video_dir!r} does not exist")
    if os.path.exists(manifest):
        entries = read_jsonl(manifest)
        for lineno, entry in enumerate(entries, 1):
            if not isinstance(entry.get("video"), str):
                raise ValueError(f'{manifest}: entry {lineno} has no "video" path; expected {{"video": path, ...}}')
    by_path = {os.path.normpath(os.path.join(root, e["video"])): e for e in entries}
    videos = sorted(os.path.join(video_dir, n) for n in os.listdir(video_dir) if n.lower().endswith(VIDEO_EXTENSIONS))
    counts = {"scored": 0, "failed": 0, "added": 0}
    for path in videos:
        key = os.path.normpath(os.path.abspath(path))
        entry = by_path.get(key)
        if entry is None:
            entry = {"video": _relative(path, root), "caption": None}
            entries.append(entry)
            by_path[key] = entry
            counts["added"] += 1
        try:
            entry["motion_score"] = round(motion_score(path), 4)
            counts["scored"] += 1
        except ValueError as e:  # unreadable or too short: report it, leave the entry unscored
            logging.warning("cannot score %s: %s", path, e)
            counts["failed"] += 1
    write_manifest(manifest, entries)
    return counts


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: python -m stepvideo_jax.tools.motion_scores VIDEO_DIR --manifest FILE")
    manifest = flags.FLAGS.manifest
    try:
        counts = score_folder(argv[1], manifest)
    except (ValueError, UnicodeDecodeError) as e:  # the CLI boundary: one line, exit 1
        raise SystemExit(f"error: {e}") from None
    print(
        f"motion scores: {counts['scored']} scored, {counts['failed']} failed, {counts['added']} new entries "
        f"-> {manifest}",
        file=sys.stdout,
    )


def _define_flags() -> None:
    """Defined only when run as a program, so that importing the module defines no global flags."""
    flags.DEFINE_string("manifest", None, "JSONL manifest to update (created if absent)", required=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
