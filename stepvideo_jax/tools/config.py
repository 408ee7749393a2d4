"""Lists every field of a config with its default and a one-line meaning.

    python -m stepvideo_jax.tools.config demo              # or ti2v, ti2v:tiny, t2v, train_ti2v:tiny, a file
    python sample.py --config=demo --config.help           # the same, from any CLI taking --config

The meanings are the comments beside each field in the config files (`c.steps = 50  # ...`,
`steps=20_000,  # ...`); a field without one shows its value only.
"""

from __future__ import annotations

import glob
import os
import re
import sys

from stepvideo_jax import configs

__all__ = ["field_comments", "describe", "main"]

_ASSIGN = re.compile(r"^\s*c\.([\w.]+)\s*=.*?#\s*(.+)$")  # c.field = value  # meaning
_KEYWORD = re.compile(r"^\s*(\w+)\s*=[^=].*?,\s*#\s*(.+)$")  # field=value,  # meaning (one per line)


# The base configs first: their comments say what a field means; the others say why they differ.
_ORDER = ("ti2v.py", "common.py", "train_ti2v.py", "demo.py")


def field_comments(paths: list[str] | None = None) -> dict[str, str]:
    """{field: comment} from `c.field = ...  # comment` lines and {"section.field": comment} from
    `field=value,  # comment` lines (nested sections) of the packaged config files; first one wins."""
    if paths is None:
        found = glob.glob(os.path.join(os.path.dirname(configs.__file__), "*.py"))
        rank = lambda p: _ORDER.index(os.path.basename(p)) if os.path.basename(p) in _ORDER else len(_ORDER)
        paths = sorted(found, key=lambda p: (rank(p), p))
    comments: dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = _ASSIGN.match(line)
                if m:
                    comments.setdefault(m.group(1), m.group(2).strip())
                    continue
                m = _KEYWORD.match(line)
                if m:
                    comments.setdefault("*." + m.group(1), m.group(2).strip())
    return comments


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(config, comments: dict[str, str]) -> str:
    """One line per field: `name = default  # meaning` (nested sections as dotted names)."""
    lines = []

    def walk(node, prefix):
        for key in node.keys():
            value, full = node[key], prefix + key
            if hasattr(value, "keys"):
                walk(value, full + ".")
                continue
            meaning = comments.get(full) or (comments.get("*." + key) if prefix else comments.get(key)) or ""
            lines.append(f"{full} = {_short(value)}" + (f"  # {meaning}" if meaning else ""))

    walk(config, "")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(f"usage: python -m stepvideo_jax.tools.config NAME[:VARIANT] ({', '.join(configs.CONFIG_NAMES)})")
        return 2 if len(argv) != 2 else 0
    spec = argv[1]
    try:
        path, _, arg = configs.resolve_config_arg(spec).partition(":")
        name = configs._packaged_name(path) if hasattr(configs, "_packaged_name") else None
        config = configs.get_config(f"{name}:{arg}") if name else _load_file(path, arg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe(config, field_comments()))
    return 0


def _load_file(path: str, arg: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_stepvideo_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
