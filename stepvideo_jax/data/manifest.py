"""The training manifest: one JSON object per line, ``{"video": path, "caption": text, "motion_score": optional}``.

Relative video paths are resolved against the manifest's folder. A malformed line (not JSON, not an
object, no "video") is an error in the manifest itself and raises naming the line; an item whose
caption is missing or empty is kept here and skipped (and counted) by the data pipeline.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

from stepvideo_jax.files import iter_jsonl, write_jsonl_atomic

__all__ = ["read_manifest", "write_manifest"]


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a JSONL manifest; returns dicts with an absolute "video" path, "caption" and "motion_score"."""
    path = os.fspath(path)
    root = os.path.dirname(os.path.abspath(path))
    entries = []
    for lineno, item in iter_jsonl(path):
        if not isinstance(item.get("video"), str):
            got = json.dumps(item)[:80]
            raise ValueError(f'{path}:{lineno}: expected {{"video": path, "caption": text, ...}}; got {got!r}')
        score = item.get("motion_score")
        if score is not None and not isinstance(score, (int, float)):
            raise ValueError(f"{path}:{lineno}: motion_score must be a number or absent; got {score!r}")
        entry = dict(item)
        entry["video"] = os.path.join(root, item["video"])
        entry["caption"] = item.get("caption")
        entry["motion_score"] = None if score is None else float(score)
        entries.append(entry)
    return entries


def write_manifest(path: str | os.PathLike, entries: Iterable[dict[str, Any]]) -> None:
    """Writes a JSONL manifest atomically (temp file then rename); video paths are written as given."""
    write_jsonl_atomic(path, entries)
