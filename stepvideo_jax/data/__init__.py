"""Training data: JSONL manifest, OpenCV clip decoding, resolution buckets and the grain pipeline."""

from stepvideo_jax.data.buckets import choose_bucket, parse_buckets, resize_center_crop
from stepvideo_jax.data.manifest import read_manifest, write_manifest
from stepvideo_jax.data.pipeline import DataConfig, make_dataset, read_latent_index
from stepvideo_jax.data.video import SkipItem, read_clip

__all__ = [
    "DataConfig",
    "SkipItem",
    "choose_bucket",
    "make_dataset",
    "parse_buckets",
    "read_clip",
    "read_latent_index",
    "read_manifest",
    "resize_center_crop",
    "write_manifest",
]
