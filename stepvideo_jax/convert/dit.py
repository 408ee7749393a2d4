"""Key table: released `StepVideoModel` (transformer/) -> `StepVideoDiT`."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from flax import nnx

from stepvideo_jax.convert.core import (
    ConversionError,
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

__all__ = ["DIT_KEYS", "convert_dit", "load_dit", "read_dit_config", "release_dit_shapes"]

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


# A named group of a DIT_KEYS source: one character of a class ("[12]") or the layer index ("\d+").
_SOURCE_GROUP = re.compile(r"\(\?P<(\w+)>(\[\w+\]|\\d\+)\)")


def _expand_source(rule: Rule, num_layers: int) -> Iterator[tuple[str, dict[str, str]]]:
    """Every key `rule.source` matches, with its groups (layer indices up to `num_layers`)."""
    groups = _SOURCE_GROUP.findall(rule.source)
    if len(groups) != rule.source.count("(?P<"):
        raise ValueError(f"cannot list the keys of rule source {rule.source!r}")
    choices = [
        [str(i) for i in range(num_layers)] if pattern == r"\d+" else list(pattern[1:-1]) for _, pattern in groups
    ]
    for values in itertools.product(*choices):
        fill = iter(values)
        key = _SOURCE_GROUP.sub(lambda _, fill=fill: next(fill), rule.source).replace("\\.", ".")
        if not rule.match(key):
            raise ValueError(f"cannot list the keys of rule source {rule.source!r} (got {key!r})")
        yield key, dict(zip((name for name, _ in groups), values))


def _release_shape(transform, shape: tuple[int, ...], cfg: DiTConfig) -> tuple[int, ...]:
    """The released tensor's shape that `transform` turns into a parameter of `shape` (its inverse)."""
    if transform is identity:
        return shape
    if transform is linear:  # torch (out, in) -> (in, out)
        return shape[::-1]
    if transform is linear_to:  # torch (out, in) -> (D, heads, k*hd) or (heads, hd, D)
        if shape[0] == cfg.hidden_size:
            return (math.prod(shape[1:]), shape[0])
        return (shape[-1], math.prod(shape[:-1]))
    if transform is conv_to_dense:  # torch (D, C, p, p) -> (p*p*C, D)
        p = cfg.patch_size
        return (shape[1], shape[0] // (p * p), p, p)
    raise ValueError(f"no inverse shape for transform {transform!r}")


def release_dit_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """{release key: torch shape} of the released `StepVideoModel` state dict for `cfg`, derived from
    DIT_KEYS and the model's parameter shapes (no weights are built): the non-block keys in table
    order, then each block's keys, layer by layer."""
    abstract = nnx.eval_shape(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)))
    params = {path: shape for path, (shape, _) in flat_param_paths(abstract).items()}
    top, blocks, covered = {}, [], set()
    for index, rule in enumerate(DIT_KEYS):
        for key, groups in _expand_source(rule, cfg.num_layers):
            target = rule.target.format(**{k: v for k, v in groups.items() if k != "layer"})
            if target not in params:  # an optional part this config lacks (motion embedder, CLIP projection)
                continue
            covered.add(target)
            if "layer" in groups:
                shape = _release_shape(rule.transform, params[target][1:], cfg)
                blocks.append((int(groups["layer"]), index, key, shape))
            else:
                top[key] = _release_shape(rule.transform, params[target], cfg)
    missing = sorted(set(params) - covered)
    if missing:
        raise ConversionError(f"DIT_KEYS map no release key to parameters {missing}")
    return {**top, **{key: shape for _, _, key, shape in sorted(blocks)}}


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
