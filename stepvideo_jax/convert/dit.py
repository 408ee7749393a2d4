"""Key table: released `StepVideoModel` (transformer/) -> `StepVideoDiT`."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from flax import nnx

from stepvideo_jax.convert.core import (
    Rule,
    TensorSource,
    build_model,
    conv_to_dense,
    convert,
    flat_param_paths,
    identity,
    linear,
    linear_to,
)
from stepvideo_jax.dit import DiTConfig, StepVideoDiT

__all__ = ["DIT_KEYS", "convert_dit", "load_dit", "read_dit_config"]

_B = r"transformer_blocks\.(?P<layer>\d+)\."


def _linear(src: str, dst: str, weight=linear) -> list[Rule]:
    return [Rule(src + r"\.weight", dst + ".kernel", weight), Rule(src + r"\.bias", dst + ".bias")]


DIT_KEYS: list[Rule] = [
    Rule(r"pos_embed\.proj\.weight", "patch_embed.kernel", conv_to_dense),
    Rule(r"pos_embed\.proj\.bias", "patch_embed.bias"),
    *_linear(r"adaln_single\.emb\.timestep_embedder\.linear_(?P<n>[12])", "time_embedder.linear_{n}"),
    *_linear(r"adaln_single\.emb\.motion_score_embedder\.linear_(?P<n>[12])", "motion_embedder.linear_{n}"),
    *_linear(r"adaln_single\.linear", "adaln"),
    *_linear(r"caption_projection\.linear_(?P<n>[12])", "caption_linear_{n}"),
    *_linear(r"clip_projection", "clip_projection"),
    *_linear(r"proj_out", "proj_out"),
    Rule(r"scale_shift_table", "scale_shift_table"),
    # Blocks: stacked on a leading layer axis for nnx.scan.
    Rule(_B + r"attn1\.wqkv\.weight", "blocks.attn1.wqkv.kernel", linear_to),  # -> (D, H, 3*hd)
    Rule(_B + r"attn(?P<a>[12])\.wo\.weight", "blocks.attn{a}.wo.kernel", linear_to),  # -> (H, hd, D)
    Rule(_B + r"attn2\.wq\.weight", "blocks.attn2.wq.kernel", linear_to),
    Rule(_B + r"attn2\.wkv\.weight", "blocks.attn2.wkv.kernel", linear_to),  # -> (D, H, 2*hd)
    Rule(_B + r"attn(?P<a>[12])\.(?P<qk>[qk])_norm\.weight", "blocks.attn{a}.{qk}_norm"),
    Rule(_B + r"ff\.net\.0\.proj\.weight", "blocks.ff.w_in.kernel", linear),
    Rule(_B + r"ff\.net\.2\.weight", "blocks.ff.w_out.kernel", linear),
    Rule(_B + r"norm(?P<n>[12])\.weight", "blocks.norm{n}_scale"),
    Rule(_B + r"norm(?P<n>[12])\.bias", "blocks.norm{n}_bias"),
    Rule(_B + r"scale_shift_table", "blocks.scale_shift_table", identity),
]


def read_dit_config(path: str | os.PathLike) -> dict[str, Any]:
    """Reads `config.json` from a released `transformer/` folder (or the file itself)."""
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: DiT config.json not found (expected a released transformer/ folder)")
    with open(file) as f:
        return json.load(f)


def convert_dit(tensors, cfg: DiTConfig, *, dtype=None) -> dict:
    """Released DiT tensors -> {nnx path: array} for `StepVideoDiT(cfg)`."""
    abstract = nnx.eval_shape(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)))
    return convert(tensors, DIT_KEYS, flat_param_paths(abstract), stacked_prefixes=("blocks.",), dtype=dtype)


def load_dit(
    weights: str | os.PathLike | Mapping,
    config: DiTConfig | Mapping[str, Any] | None = None,
    **overrides,
) -> StepVideoDiT:
    """Loads a released DiT: `weights` is a `transformer/` folder (config.json + shards), a
    safetensors file or index, or a {key: array} mapping; `config` a DiTConfig or release config dict."""
    if config is None:
        if isinstance(weights, Mapping):
            raise ValueError("load_dit needs a config when weights are given as a mapping")
        config = read_dit_config(weights)
    cfg = config if isinstance(config, DiTConfig) else DiTConfig.from_release(config, **overrides)
    tensors = weights if isinstance(weights, Mapping) else TensorSource(weights)
    arrays = convert_dit(tensors, cfg)
    return build_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), arrays)
