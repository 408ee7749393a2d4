"""The packaged ml_collections configs: `get_config("ti2v:tiny")`, and how the CLIs find them.

Each module here has `get_config(arg)` (big_vision style; `arg` picks a variant):

    ti2v        sampling, Step-Video-TI2V (the released 30B model; ":tiny" random-weight models)
    t2v         sampling, Step-Video-T2V (same code, no image / motion score)
    demo        the shipped demo model (sampling; ":vae", ":dit" training; ":recipe")
    train_ti2v  training the TI2V DiT (":tiny" for CPU runs)
    common      pieces the others share (not a config itself)

A `--config` value is either a file (`path/to/my_config.py[:ARG]`, loaded by path as
ml_collections does) or the name of a packaged config: `ti2v:tiny`, `configs/ti2v.py:tiny` and
`stepvideo_jax/configs/ti2v.py:tiny` all name the same packaged file, so the CLIs work from any
directory after `pip install`.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Sequence

__all__ = ["CONFIG_NAMES", "get_config", "config_path", "resolve_config_arg", "rewrite_config_argv", "nearest_names"]

CONFIG_NAMES = ("ti2v", "t2v", "demo", "train_ti2v")
_HERE = os.path.dirname(os.path.abspath(__file__))
_PREFIXES = ("stepvideo_jax/configs/", "configs/", "./configs/")


def _packaged_name(spec: str) -> str | None:
    """ "ti2v", "configs/ti2v.py", "stepvideo_jax/configs/ti2v.py" -> "ti2v"; None if not packaged."""
    name = spec.replace(os.sep, "/")
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = name[:-3] if name.endswith(".py") else name
    return name if name in CONFIG_NAMES else None


def config_path(name: str) -> str:
    """The file of packaged config `name` (one of CONFIG_NAMES)."""
    if name not in CONFIG_NAMES:
        raise ValueError(f"unknown config {name!r}; expected one of: {', '.join(CONFIG_NAMES)}")
    return os.path.join(_HERE, f"{name}.py")


def resolve_config_arg(value: str) -> str:
    """A `--config` value -> `FILE[:ARG]` that ml_collections loads: an existing file is kept, a
    packaged name (with or without `configs/` and `.py`) becomes the packaged file's path."""
    spec, sep, arg = value.partition(":")
    if os.path.isfile(spec):
        return value
    name = _packaged_name(spec)
    if name is None:
        raise ValueError(
            f"config {spec!r} is neither a file nor a packaged config; expected a path to a config file or one "
            f"of: {', '.join(CONFIG_NAMES)} (e.g. --config=ti2v:tiny)"
        )
    return config_path(name) + sep + arg


def get_config(value: str):
    """The ConfigDict of a packaged config: `get_config("demo")`, `get_config("ti2v:tiny")`."""
    spec, _, arg = value.partition(":")
    name = _packaged_name(spec)
    if name is None:
        raise ValueError(f"unknown config {spec!r}; expected one of: {', '.join(CONFIG_NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.get_config(arg)


def rewrite_config_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
    """argv with the value of `--FLAG` (`--FLAG=V` or `--FLAG V`) resolved by `resolve_config_arg`."""
    out = list(argv)
    for i, arg in enumerate(out):
        for dashes in ("--", "-"):
            head = f"{dashes}{flag}"
            if arg.startswith(head + "="):
                out[i] = head + "=" + resolve_config_arg(arg[len(head) + 1 :])
            elif arg == head and i + 1 < len(out):
                out[i + 1] = resolve_config_arg(out[i + 1])
    return out


def nearest_names(name: str, config, limit: int = 3) -> list[str]:
    """The dotted field names of `config` closest to `name` (for an "unknown field" message)."""

    def fields(c, prefix=""):
        for key, value in c.items():
            full = prefix + key
            yield full
            if hasattr(value, "items"):
                yield from fields(value, full + ".")

    return difflib.get_close_matches(name, list(fields(config)), n=limit, cutoff=0.5)
