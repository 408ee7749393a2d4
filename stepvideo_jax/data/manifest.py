"""The training manifest: one JSON object per line, ``{"video": path, "caption": text, "motion_score": optional}``.

Relative video paths are resolved against the manifest's folder. A malformed line (not JSON, not an
object, no "video") is an error in the manifest itself and raises naming the line; an item whose
caption is missing or empty is kept here and skipped (and counted) by the data pipeline.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable

__all__ = ["read_manifest", "write_manifest"]


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a JSONL manifest; returns dicts with an absolute "video" path, "caption" and "motion_score"."""
    path = os.fspath(path)
    root = os.path.dirname(os.path.abspath(path))
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one object per line") from None
            if not isinstance(item, dict) or not isinstance(item.get("video"), str):
                raise ValueError(f'{path}:{lineno}: expected {{"video": path, "caption": text, ...}}; got {line.strip()[:80]!r}')
            score = item.get("motion_score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                                      or not math.isfinite(score) or score < 0):
                raise ValueError(f"{path}:{lineno}: motion_score must be a finite number >= 0 or absent; got {score!r}")
            entry = dict(item)
            entry["video"] = os.path.join(root, item["video"])
            entry["caption"] = item.get("caption")
            entry["motion_score"] = None if score is None else float(score)
            entries.append(entry)
    return entries


def write_manifest(path: str | os.PathLike, entries: Iterable[dict[str, Any]]) -> None:
    """Writes a JSONL manifest atomically (temp file then rename); video paths are written as given."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
