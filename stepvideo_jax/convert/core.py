"""Converter core: a declarative table from released (PyTorch) key names to NNX parameter paths.

A table is a list of ``Rule(source_regex, target_template, transform)``. A source regex may capture
``layer`` (``transformer_blocks\\.(?P<layer>\\d+)\\.``): those tensors are stacked along a leading axis
for ``nnx.scan``. Other named groups fill ``{name}`` fields of the target template. Transforms are
small hooks that take the source array and the target shape (without the layer axis).

Anything that does not line up raises ``ConversionError`` naming the key: a source key no rule maps,
a parameter no key fills, a layer index missing, or a shape that differs after the transform.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from flax import nnx
from safetensors import safe_open

__all__ = [
    "ConversionError",
    "Rule",
    "TensorSource",
    "convert",
    "load_state",
    "build_model",
    "flat_param_paths",
    "linear",
    "linear_to",
    "conv_to_dense",
    "identity",
]


class ConversionError(ValueError):
    """A checkpoint that does not match the model: names the key and the shapes."""


Transform = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


def identity(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return a


def linear(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """torch Linear weight (out, in) -> kernel (in, out)."""
    return a.T


def linear_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """torch Linear weight (out, in) -> kernel reshaped to the target (e.g. (in, heads, head_dim) or
    (heads, head_dim, out)); the flat out/in order of the release is kept."""
    t = a.T
    if t.size != int(np.prod(shape)):
        return t  # let the shape check report it
    return t.reshape(shape)


def conv_to_dense(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """torch Conv weight (out, in, *k) -> dense kernel (*k, in) flattened x out (patch order k..., in)."""
    out_ch = a.shape[0]
    k = np.moveaxis(a, (0, 1), (-1, -2))  # (*k, in, out)
    return k.reshape(-1, out_ch)


@dataclasses.dataclass(frozen=True)
class Rule:
    source: str
    target: str
    transform: Transform = identity

    def match(self, key: str) -> re.Match | None:
        return re.fullmatch(self.source, key)


class TensorSource:
    """Lazy view of one `.safetensors` file, a sharded set (`*.safetensors.index.json`), or a folder
    holding either. Tensors are read one at a time; bf16 arrives as `ml_dtypes.bfloat16` (no torch)."""

    def __init__(self, path: str | os.PathLike):
        path = os.fspath(path)
        self.path = path
        self._key_to_file: dict[str, str] = {}
        if os.path.isdir(path):
            indexes = sorted(f for f in os.listdir(path) if f.endswith(".safetensors.index.json"))
            singles = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if indexes:
                self._load_index(os.path.join(path, indexes[0]))
            elif len(singles) == 1:
                self._load_file(os.path.join(path, singles[0]))
            else:
                raise ConversionError(
                    f"{path}: expected one *.safetensors file or a *.safetensors.index.json; found {singles or 'none'}"
                )
        elif path.endswith(".index.json"):
            self._load_index(path)
        elif path.endswith(".safetensors"):
            self._load_file(path)
        else:
            raise ConversionError(f"{path}: expected a .safetensors file, a .safetensors.index.json, or a folder")

    def _load_file(self, file: str) -> None:
        if not os.path.isfile(file):
            raise ConversionError(f"{file}: file not found")
        try:
            with safe_open(file, "np") as f:
                keys = list(f.keys())
        except Exception as e:  # safetensors raises its own error types for truncated headers
            raise ConversionError(f"{file}: not a readable safetensors file ({e})") from e
        for k in keys:
            self._key_to_file[k] = file

    def _load_index(self, index: str) -> None:
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ConversionError(f"{index}: malformed index (expected a 'weight_map' object)") from e
        folder = os.path.dirname(index)
        files = sorted(set(weight_map.values()))
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.isfile(file):
                raise ConversionError(f"{index}: shard {name} is listed but missing")
        for name in files:
            self._load_file(os.path.join(folder, name))
        for key, name in weight_map.items():
            file = os.path.join(folder, name)
            if self._key_to_file.get(key) != file:
                raise ConversionError(f"{index}: key {key} is listed in {name} but not stored there")

    def keys(self) -> list[str]:
        return list(self._key_to_file)

    def file_of(self, key: str) -> str:
        return self._key_to_file[key]

    def files(self) -> list[str]:
        return sorted(set(self._key_to_file.values()))

    def shape(self, key: str) -> tuple[int, ...]:
        with safe_open(self._key_to_file[key], "np") as f:
            return tuple(f.get_slice(key).get_shape())

    def get(self, key: str) -> np.ndarray:
        file = self._key_to_file[key]
        try:
            with safe_open(file, "np") as f:
                return f.get_tensor(key)
        except Exception as e:
            raise ConversionError(f"{file}: cannot read tensor {key} ({e})") from e

    def __contains__(self, key: str) -> bool:
        return key in self._key_to_file

    def __iter__(self) -> Iterator[str]:
        return iter(self._key_to_file)

    def __len__(self) -> int:
        return len(self._key_to_file)


def flat_param_paths(model_or_state) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """'a.b.kernel' -> (shape, dtype) for every nnx.Param of a (possibly abstract) model or state."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state, nnx.Param)
    out = {}
    for path, var in nnx.to_flat_state(state):
        value = var.get_value() if hasattr(var, "get_value") else var
        out[".".join(str(p) for p in path)] = (tuple(value.shape), value.dtype)
    return out


def convert(
    tensors: Mapping[str, np.ndarray] | TensorSource,
    rules: Sequence[Rule],
    targets: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    *,
    stacked_prefixes: Iterable[str] = (),
    dtype=None,
) -> dict[str, np.ndarray]:
    """Maps every source tensor through `rules` onto `targets` ({path: (shape, dtype)}).

    Returns {path: array} covering every target exactly once, in the target dtype (or `dtype`).
    Targets under a prefix in `stacked_prefixes` carry a leading layer axis filled from the rule's
    `layer` group.
    """
    stacked_prefixes = tuple(stacked_prefixes)
    keys = list(tensors.keys())
    out: dict[str, np.ndarray] = {}
    filled_layers: dict[str, set[int]] = {}
    for key in keys:
        where = _where(tensors, key)
        rule, m = _find_rule(rules, key, where)
        groups = {k: v for k, v in m.groupdict().items() if k != "layer"}
        target = rule.target.format(**groups)
        if target not in targets:
            raise ConversionError(f"key {key}{where}: maps to parameter {target!r}, which the model does not have")
        full_shape, tdtype = targets[target]
        tdtype = dtype if dtype is not None else tdtype
        layer = m.groupdict().get("layer")
        stacked = any(target.startswith(p) for p in stacked_prefixes)
        if stacked != (layer is not None):
            raise ConversionError(f"key {key}{where}: layer index and stacked parameter {target!r} disagree")
        shape = full_shape[1:] if stacked else full_shape
        src = tensors.get(key) if isinstance(tensors, TensorSource) else np.asarray(tensors[key])
        src_shape = tuple(src.shape)
        if np.dtype(src.dtype).kind in "iub" and np.dtype(tdtype).kind not in "iub":
            raise ConversionError(
                f"key {key}{where}: stored as {np.dtype(src.dtype)}, but parameter {target!r} holds floating "
                "weights (an integer or boolean tensor would be cast silently to wrong values); re-export the source"
            )
        arr = rule.transform(src, shape)
        if tuple(arr.shape) != tuple(shape):
            raise ConversionError(
                f"key {key}{where}: shape {src_shape} -> {tuple(arr.shape)} after transform, but parameter {target!r} "
                f"expects {tuple(shape)}"
            )
        # Cast as it is read (never a float32 copy of the whole model) and store C-contiguous so the
        # checkpoint writer need not copy it again.
        arr = np.asarray(arr).astype(tdtype, copy=False)
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr))) if np.dtype(tdtype).kind not in "iub" else 0
        if bad:
            raise ConversionError(
                f"key {key}{where}: {bad} of {arr.size} values are NaN or infinite "
                f"(in {np.dtype(tdtype)}); the source weights are corrupt or overflow the dtype"
            )
        if stacked:
            i = int(layer)
            if i >= full_shape[0]:
                raise ConversionError(f"key {key}{where}: layer {i} out of range for {full_shape[0]} layers")
            if target not in out:
                out[target] = np.empty(full_shape, dtype=tdtype)
                filled_layers[target] = set()
            if i in filled_layers[target]:
                raise ConversionError(f"key {key}{where}: parameter {target!r} layer {i} given twice")
            out[target][i] = arr
            filled_layers[target].add(i)
        else:
            if target in out:
                raise ConversionError(f"key {key}{where}: parameter {target!r} given twice")
            out[target] = np.ascontiguousarray(arr)
    source = f" {tensors.path}" if getattr(tensors, "path", None) else ""
    missing = sorted(set(targets) - set(out))
    if missing:
        raise ConversionError(
            f"checkpoint{source} is missing parameters: {', '.join(missing[:20])}"
            + (" ..." if len(missing) > 20 else "")
        )
    for target, layers in filled_layers.items():
        n = targets[target][0][0]
        if len(layers) != n:
            absent = sorted(set(range(n)) - layers)
            raise ConversionError(f"parameter {target!r}: checkpoint{source} is missing layers {absent}")
    return out


def _where(tensors, key: str) -> str:
    """ " in FILE" for a source that knows which file holds `key` (a TensorSource, or a view over one
    with a `file_of` method), else ""."""
    file_of = getattr(tensors, "file_of", None)
    file = file_of(key) if file_of is not None else None
    return f" in {file}" if file else ""


def _find_rule(rules: Sequence[Rule], key: str, where: str = "") -> tuple[Rule, re.Match]:
    for rule in rules:
        m = rule.match(key)
        if m is not None:
            return rule, m
    raise ConversionError(f"unexpected key {key}{where}: no conversion rule maps it")


def load_state(model: nnx.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes converted arrays into the model's nnx.Params in place (shapes already checked)."""
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    for path, var in flat.items():
        name = ".".join(str(p) for p in path)
        var.set_value(np.asarray(arrays[name]))
    nnx.update(model, state)


def build_model(make_model: Callable[[], nnx.Module], arrays: Mapping[str, np.ndarray]) -> nnx.Module:
    """Builds the model abstractly (no random init) and fills it with converted arrays."""
    import jax.numpy as jnp

    abstract = nnx.eval_shape(make_model)
    graphdef, state = nnx.split(abstract)
    for path, var in nnx.to_flat_state(state):
        name = ".".join(str(p) for p in path)
        if name not in arrays:
            raise ConversionError(f"no converted value for model variable {name!r}")
        var.set_value(jnp.asarray(arrays[name]))
    return nnx.merge(graphdef, state)
