"""The training manifest: one JSON object per line, ``{"video": path, "caption": text, "motion_score": optional}``.

Relative video paths are resolved against the manifest's folder. A malformed line (not JSON, not an
object, no "video") is an error in the manifest itself and raises naming the line; an item whose
caption is missing or empty is kept here and skipped (and counted) by the data pipeline.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

from stepvideo_jax.files import iter_jsonl, write_jsonl_atomic

__all__ = ["iter_path_index", "read_manifest", "write_manifest"]


def iter_path_index(path: str | os.PathLike, key: str, form: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of a JSONL file whose objects name a file under `key`, that path made
    absolute (a relative one against the JSONL file's folder). `form` describes an object for errors."""
    path = os.fspath(path)
    root = os.path.dirname(os.path.abspath(path))
    for lineno, item in iter_jsonl(path):
        if not isinstance(item.get(key), str):
            raise ValueError(f"{path}:{lineno}: expected {form}; got {json.dumps(item)[:80]!r}")
        yield lineno, dict(item, **{key: os.path.join(root, item[key])})


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a JSONL manifest; returns dicts with an absolute "video" path, "caption" and "motion_score"."""
    entries = []
    for lineno, item in iter_path_index(path, "video", '{"video": path, "caption": text, ...}'):
        score = item.get("motion_score")
        if score is not None and (
            isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0
        ):
            raise ValueError(
                f"{os.fspath(path)}:{lineno}: motion_score must be a finite number >= 0 or absent; got {score!r}"
            )
        item["caption"] = item.get("caption")
        item["motion_score"] = None if score is None else float(score)
        entries.append(item)
    return entries


def write_manifest(path: str | os.PathLike, entries: Iterable[dict[str, Any]]) -> None:
    """Writes a JSONL manifest atomically (temp file then rename); video paths are written as given."""
    write_jsonl_atomic(path, entries)
