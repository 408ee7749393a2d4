"""Batch generation: many videos from one JSON-lines file, with the model loaded and compiled once.

    python sample.py --config=demo --config.prompts=prompts.jsonl

One JSON object per line: {"image": "cat.png", "prompt": "...", "motion_score": 5.0, "seed": 7,
"name": "cat"}; every key is optional and defaults to the config's value (`name`: the output file
stem, default prompt prefix + seed). Relative image paths are relative to the JSONL file's folder.
Every item is validated before the model loads; an item that fails (unreadable image, bad value) is
reported in one line and skipped while the others are generated; a summary closes the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from stepvideo_jax import api

__all__ = ["BatchItem", "read_prompts", "run_batch"]

_KEYS = ("image", "prompt", "motion_score", "seed", "name", "steps", "cfg")


@dataclasses.dataclass(frozen=True)
class BatchItem:
    line: int  # 1-based line number in the JSONL file
    values: dict[str, Any]  # call values: image, prompt, motion_score, seed, ...
    name: str | None  # output file stem


def read_prompts(path: str) -> tuple[list[BatchItem], list[str]]:
    """(items, problems): one item per non-empty line; a line that is not a JSON object with known keys
    becomes a one-line problem `line N: ...` instead."""
    if not os.path.isfile(path):
        raise ValueError(f"prompts file {path!r} does not exist (expected a JSON-lines file, one video per line)")
    folder = os.path.dirname(os.path.abspath(path))
    items, problems = [], []
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: not JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                problems.append(f'line {n}: expected a JSON object like {{"image": ..., "prompt": ...}}')
                continue
            unknown = sorted(set(obj) - set(_KEYS))
            if unknown:
                problems.append(f"line {n}: unknown keys {unknown}; expected some of {list(_KEYS)}")
                continue
            name = obj.pop("name", None)
            if name is not None and (not isinstance(name, str) or not name or os.sep in name or name.startswith(".")):
                problems.append(f"line {n}: name must be a plain file name without a folder; got {name!r}")
                continue
            image = obj.get("image")
            if isinstance(image, str) and image and image != "synthetic" and not os.path.isabs(image):
                obj["image"] = os.path.join(folder, image)
            items.append(BatchItem(line=n, values=obj, name=name))
    if not items and not problems:
        raise ValueError(f"prompts file {path!r} has no lines; expected one JSON object per video")
    return items, problems


def _call_args(config, item: BatchItem) -> tuple[Any, dict[str, Any]]:
    """(image, other call values) of an item; the config's image when the line names none."""
    values = dict(item.values)
    image = values.pop("image", None)
    if config.use_additional_conditions and image is None:
        image = config.image
    return image, values


def _job(pipe, config, item: BatchItem):
    """(validated settings, prepared image) of an item for `pipe.generate_all`."""
    image, values = _call_args(config, item)
    return pipe.settings(image, **values)


def run_batch(config, mesh=None, *, log: Callable[[str], None] = tqdm.write) -> dict[str, Any]:
    """Generates every item of `config.prompts` with one loaded pipeline; returns {"written": [paths],
    "skipped": [one-line reasons], "timings": {...}}."""
    t0 = time.perf_counter()
    items, skipped = read_prompts(config.prompts)
    for problem in skipped:
        log(f"skipped {problem}")
    valid = []
    for item in items:
        try:
            image, values = _call_args(config, item)
            api.call_settings(config, image, **values)
        except ValueError as e:  # reported and skipped; the others still run
            skipped.append(f"line {item.line}: {e}")
            log(f"skipped line {item.line}: {e}")
            continue
        valid.append(item)
    written, seconds = [], []
    if valid:
        pipe = api.pipeline_for(config, mesh)
        t_load = pipe.load_seconds
        # Each item's image is read again when its turn comes (validation above kept nothing).
        jobs = (_job(pipe, config, item) for item in valid)
        outputs = pipe.generate_all(jobs, total=len(valid), progress=config.progress)
        for i, (item, out) in enumerate(zip(valid, outputs), start=1):
            paths = out.save_in(config.output_dir, item.name)
            seconds.append(out.timings["total_s"])
            written.append(paths)
            log(f"[{i}/{len(valid)}] wrote {paths['mp4']} ({out.timings['total_s']:.1f}s)")
    else:
        t_load = 0.0
    total = time.perf_counter() - t0
    summary = (
        f"batch: {len(written)} of {len(written) + len(skipped)} videos written to {config.output_dir} in "
        f"{total:.1f}s (load {t_load:.1f}s"
        + (
            f", first video {seconds[0]:.1f}s, later ones {sum(seconds[1:]) / max(len(seconds) - 1, 1):.1f}s each"
            if seconds
            else ""
        )
        + ")"
        + (f"; {len(skipped)} skipped" if skipped else "")
    )
    log(summary)
    return {"written": written, "skipped": skipped, "timings": {"load_s": t_load, "total_s": total}}
