"""Parity of our networks against the reference fixtures made with the released PyTorch code.

    python -m stepvideo_jax.tools.parity PREFIX [PREFIX ...]

PREFIX is a fixture path without its suffix (`../shared/fixtures/reference/dit_ti2v`). Each fixture's
weights go through the same converter users run; one line per checked output:
`NAME max_abs=... rel_l2=... ok|FAIL`. Exit 0 only if every output has rel_l2 <= 1e-4; exit 2 for an
unknown kind or a malformed fixture (or no PREFIX). Flags are parsed by absl (`--help` lists them).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

import numpy as np
from absl import app

from stepvideo_jax.convert.core import ConversionError
from stepvideo_jax.tools.fixtures import Fixture, FixtureError, load_fixture

__all__ = ["KINDS", "check_fixture", "check_prefixes", "compare", "main", "TOLERANCE"]

TOLERANCE = 1e-4

# kind -> "module:function"; the function takes a Fixture and returns [(name, ours, expected)].
KINDS: dict[str, str] = {
    "dit_ti2v": "stepvideo_jax.dit.parity:check",
    "dit_t2v": "stepvideo_jax.dit.parity:check",
    "vae_v2": "stepvideo_jax.vae.parity:check",
    "step_llm": "stepvideo_jax.text.parity:check_step_llm",
    "hunyuan_clip": "stepvideo_jax.text.parity:check_hunyuan_clip",
}


def compare(ours, expected) -> tuple[float, float]:
    """(max_abs, rel_l2) of ours vs expected, computed in float64."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        raise FixtureError(f"output shape {a.shape} does not match expected {b.shape}")
    diff = a - b
    denom = np.linalg.norm(b)
    rel = float(np.linalg.norm(diff) / denom) if denom > 0 else float(np.linalg.norm(diff))
    return float(np.max(np.abs(diff))) if diff.size else 0.0, rel


def _checker(kind: str) -> Callable[[Fixture], list]:
    if kind not in KINDS:
        raise FixtureError(f"unknown fixture kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module, fn = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), fn)


def check_fixture(prefix: str) -> list[tuple[str, float, float]]:
    """Runs one fixture; returns [(output name, max_abs, rel_l2)]."""
    fixture = load_fixture(prefix)
    results = []
    for name, ours, expected in _checker(fixture.kind)(fixture):
        max_abs, rel = compare(ours, expected)
        results.append((name, max_abs, rel))
    return results


def check_prefixes(prefixes: Sequence[str]) -> int:
    """Checks every fixture, printing one line per output; returns the exit status (0 all within
    TOLERANCE, 1 some output outside it, 2 an unknown kind or a malformed fixture)."""
    ok = True
    for prefix in prefixes:
        try:
            results = check_fixture(prefix)
        except (FixtureError, ConversionError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for name, max_abs, rel in results:
            good = rel <= TOLERANCE
            ok &= good
            print(f"{prefix}:{name} max_abs={max_abs:.3e} rel_l2={rel:.3e} {'ok' if good else 'FAIL'}")
    return 0 if ok else 1


def main(argv: Sequence[str]) -> int:
    """absl entry point: argv[0] is the program, the rest are fixture prefixes."""
    if len(argv) < 2:
        raise app.UsageError("give at least one fixture PREFIX", exitcode=2)
    return check_prefixes(argv[1:])


if __name__ == "__main__":
    app.run(main)
