"""The grain input pipeline: manifest -> shuffled, process-sharded records -> decoded examples ->
batches of one resolution bucket, with a checkpointable iterator state.

Two kinds of records:

* ``"video"``: the JSONL manifest of raw videos (``stepvideo_jax.data.manifest``). Each clip is
  ``num_frames`` frames (a multiple of 17) taken every ``frame_stride`` frames from the start,
  resized to cover the bucket nearest its aspect ratio and centre-cropped, scaled to [-1, 1]. The
  training loop encodes it online (VAE + text encoders).
* ``"latents"``: the index written by ``python -m stepvideo_jax.tools.precompute``: one ``.npz`` per
  clip with VAE latents, the first frame's condition latents, text-encoder states and masks and the
  motion score, so neither the VAE nor the text encoders run during training.

Items that cannot be used (unreadable file, too few frames, no caption) are skipped with a warning
and counted by reason; the counts are part of the iterator state and ``summary()`` reports them.
Each batch holds ``batch_size`` examples of one bucket; buckets fill in the order the shuffled stream
visits them. The iterator state is the stream position plus the positions of the examples waiting in
unfilled buckets (they are decoded again on restore), so a restored iterator yields exactly the
batches the original would have.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import logging

from stepvideo_jax.data.buckets import bucket_key, choose_bucket, parse_buckets, resize_center_crop
from stepvideo_jax.data.manifest import iter_path_index, read_manifest
from stepvideo_jax.data.video import FRAMES_PER_CHUNK, SkipItem, read_clip

__all__ = [
    "DataConfig",
    "BucketBatchIterDataset",
    "BucketBatchIterator",
    "VideoLoader",
    "LatentLoader",
    "read_latent_index",
    "make_dataset",
]

Loader = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    manifest: str
    kind: str = "latents"  # "latents" (precomputed) or "video" (raw, encoded online)
    batch_size: int = 1  # per JAX process
    num_frames: int = 17
    frame_stride: int = 1
    buckets: tuple[tuple[int, int], ...] = ((544, 992),)
    default_motion_score: float = 5.0  # for manifest items without a motion score
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None  # None: repeat forever

    def __post_init__(self):
        if self.kind not in ("latents", "video"):
            raise ValueError(f"data kind must be 'latents' or 'video'; got {self.kind!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.num_frames <= 0 or self.num_frames % FRAMES_PER_CHUNK:
            raise ValueError(f"num_frames must be a positive multiple of {FRAMES_PER_CHUNK}; got {self.num_frames}")
        parse_buckets(self.buckets)


# ---------------------------------------------------------------------------------------------- loaders
class VideoLoader:
    """Manifest entry -> (bucket key, {"video": [F, H, W, 3] float32 in [-1, 1], "caption", "motion_score"})."""

    def __init__(self, num_frames: int, frame_stride: int, buckets, default_motion_score: float):
        self.num_frames, self.frame_stride = num_frames, frame_stride
        self.buckets = parse_buckets(buckets)
        self.default_motion_score = float(default_motion_score)

    def __call__(self, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        caption = entry.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise SkipItem("no_caption", f"{entry.get('video')!r} has no caption")
        frames = read_clip(entry["video"], self.num_frames, self.frame_stride)  # [F, H, W, 3] uint8
        bucket = choose_bucket(frames.shape[1], frames.shape[2], self.buckets)
        frames = resize_center_crop(frames, *bucket)
        score = entry.get("motion_score")
        example = {
            "video": frames.astype(np.float32) / 127.5 - 1.0,
            "caption": caption,
            "motion_score": np.float32(self.default_motion_score if score is None else score),
        }
        return bucket_key(bucket), example


# Arrays of one precomputed item (channels-last latents; see tools/precompute.py).
LATENT_KEYS = ("latents", "condition", "llm_states", "llm_mask", "clip_states", "motion_score")


def read_latent_index(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads the precompute index (JSONL of {"latents": npz path, "caption", "motion_score"})."""
    return [item for _, item in iter_path_index(path, "latents", '{"latents": path, ...}')]


class LatentLoader:
    """Precompute index entry -> (bucket key from the latent shape, dict of the LATENT_KEYS arrays)."""

    def __call__(self, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        path = entry["latents"]
        try:
            with np.load(path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as e:
            raise SkipItem("unreadable", f"cannot read {path!r} ({e})") from None
        missing = [k for k in LATENT_KEYS if k not in arrays]
        if missing:
            raise SkipItem("unreadable", f"{path!r} lacks arrays {missing}")
        f, h, w, c = arrays["latents"].shape
        arrays["motion_score"] = np.asarray(arrays["motion_score"], np.float32).reshape(())
        return f"{f}x{h}x{w}", arrays


# ---------------------------------------------------------------------------------------------- batching
def _collate(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for k, v in examples[0].items():
        if isinstance(v, str):
            out[k] = [e[k] for e in examples]
        else:
            out[k] = np.stack([np.asarray(e[k]) for e in examples])
    return out


class BucketBatchIterator(grain.DatasetIterator):
    """Reads records by position, loads them, and emits a batch whenever one bucket holds batch_size."""

    def __init__(self, records: grain.MapDataset, load: Loader, batch_size: int, describe: Callable[[Any], str]):
        super().__init__()
        self._records, self._load, self._batch_size, self._describe = records, load, batch_size, describe
        self._next = 0
        self._pending: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._skipped: collections.Counter = collections.Counter()
        self._consecutive_skips = 0
        self._examples = 0

    def _load_at(self, pos: int) -> tuple[str, dict[str, Any]]:
        return self._load(self._records[pos])

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._next >= len(self._records):
                raise StopIteration
            pos = self._next
            self._next += 1
            try:
                key, example = self._load_at(pos)
            except SkipItem as e:
                self._skipped[e.reason] += 1
                self._consecutive_skips += 1
                logging.warning("skipping %s (%s): %s", self._describe(self._records[pos]), e.reason, e.detail)
                # One full pass of skips in a row means nothing is usable; stop instead of spinning.
                if self._consecutive_skips >= self._records_per_epoch():
                    raise ValueError(f"every item of the dataset was skipped; {self.summary()}") from None
                continue
            self._consecutive_skips = 0
            bucket = self._pending.setdefault(key, [])
            bucket.append((pos, example))
            if len(bucket) == self._batch_size:
                del self._pending[key]
                self._examples += self._batch_size
                return _collate([ex for _, ex in bucket])

    def _records_per_epoch(self) -> int:
        return getattr(self, "records_per_epoch", len(self._records))

    def get_state(self) -> dict[str, Any]:
        return {
            "next": int(self._next),
            "pending": {k: [int(p) for p, _ in v] for k, v in sorted(self._pending.items())},
            "skipped": dict(sorted(self._skipped.items())),
            "consecutive_skips": int(self._consecutive_skips),
            "examples": int(self._examples),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._next = int(state["next"])
        self._skipped = collections.Counter({k: int(v) for k, v in state["skipped"].items()})
        self._consecutive_skips = int(state["consecutive_skips"])
        self._examples = int(state["examples"])
        self._pending = {}
        for key, positions in state["pending"].items():
            self._pending[key] = []
            for pos in positions:
                got_key, example = self._load_at(int(pos))
                if got_key != key:
                    raise ValueError(
                        f"restored item at stream position {pos} is in bucket {got_key}, the state says {key}"
                    )
                self._pending[key].append((int(pos), example))

    def summary(self) -> str:
        skipped = sum(self._skipped.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self._skipped.items())) or "none"
        return f"data: {self._examples} examples batched, {skipped} items skipped ({reasons})"

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self._skipped)


class _ProcessBlocks(grain.MapDataset):
    """Process ``index``'s share of ``parent`` in blocks of ``block``: of every ``block * count``
    consecutive records it gets the ``index``-th block. With one bucket, global batch k (the processes'
    k-th batches, in process order) is then exactly records [k B, (k + 1) B) of the stream, B = count *
    block, the batch a single process with batch size B reads, so multi-process training sees the
    same batches in the same order. Blocks are disjoint and cover the stream."""

    def __init__(self, parent: grain.MapDataset, block: int, index: int, count: int):
        super().__init__(parent)
        self._block, self._index, self._count = block, index, count
        full, rest = divmod(len(parent), block * count)
        self._length = full * block + min(max(rest - index * block, 0), block)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.slice(i)
        group, offset = divmod(i, self._block)
        return self._parent[(group * self._count + self._index) * self._block + offset]

    def __str__(self) -> str:
        return f"ProcessBlocks(block={self._block}, index={self._index}, count={self._count})"


class BucketBatchIterDataset(grain.IterDataset):
    def __init__(
        self,
        records: grain.MapDataset,
        load: Loader,
        batch_size: int,
        records_per_epoch: int,
        describe: Callable[[Any], str] = str,
    ):
        super().__init__(records)
        self._records, self._load, self._batch_size = records, load, batch_size
        self._records_per_epoch, self._describe = records_per_epoch, describe

    def __iter__(self) -> BucketBatchIterator:
        it = BucketBatchIterator(self._records, self._load, self._batch_size, self._describe)
        it.records_per_epoch = self._records_per_epoch
        return it


def make_dataset(
    cfg: DataConfig, *, process_index: int | None = None, process_count: int | None = None
) -> BucketBatchIterDataset:
    """The pipeline for this JAX process: ``iter(make_dataset(cfg))`` yields batches of one bucket each."""
    if cfg.kind == "video":
        entries = read_manifest(cfg.manifest)
        load: Loader = VideoLoader(cfg.num_frames, cfg.frame_stride, cfg.buckets, cfg.default_motion_score)
        describe = lambda e: repr(e["video"])
    else:
        entries = read_latent_index(cfg.manifest)
        load = LatentLoader()
        describe = lambda e: repr(e["latents"])
    if not entries:
        raise ValueError(f"manifest {cfg.manifest!r} has no items")
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    records = grain.MapDataset.source(entries)
    if cfg.shuffle:
        records = records.shuffle(seed=cfg.seed)  # reshuffled every epoch by repeat
    records = records.repeat(cfg.num_epochs)
    records = _ProcessBlocks(records, cfg.batch_size, pi, pc)  # shard by JAX process, a batch-sized block each
    return BucketBatchIterDataset(records, load, cfg.batch_size, max(1, len(entries) // pc), describe)
