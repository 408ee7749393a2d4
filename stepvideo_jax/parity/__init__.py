"""Parity of our networks against the reference fixtures made with the released PyTorch code.

Verification code only (no model module imports it): `check_fixture(prefix)` loads a fixture
(`fixtures.py`), converts its released-layout weights through the same converter users run, calls
the network (`dit.py`, `vae.py`, `text.py`) and compares every output (`compare`).
`python -m stepvideo_jax.tools.parity PREFIX ...` is the command-line front end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stepvideo_jax.parity import dit, text, vae
from stepvideo_jax.parity.fixtures import FIXTURES_ENV, Fixture, FixtureError, fixtures_dir, load_fixture

__all__ = [
    "KINDS",
    "TOLERANCE",
    "check_fixture",
    "compare",
    "Fixture",
    "FixtureError",
    "load_fixture",
    "fixtures_dir",
    "FIXTURES_ENV",
]

TOLERANCE = 1e-4

# Fixture kind -> check(fixture) -> [(output name, ours, expected)].
KINDS: dict[str, Callable[[Fixture], list]] = {
    "dit_ti2v": dit.check,
    "dit_t2v": dit.check,
    "vae_v2": vae.check,
    "step_llm": text.check_step_llm,
    "hunyuan_clip": text.check_hunyuan_clip,
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


def check_fixture(prefix: str) -> list[tuple[str, float, float]]:
    """Runs one fixture; returns [(output name, max_abs, rel_l2)]."""
    fixture = load_fixture(prefix)
    if fixture.kind not in KINDS:
        raise FixtureError(f"unknown fixture kind {fixture.kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    return [(name, *compare(ours, expected)) for name, ours, expected in KINDS[fixture.kind](fixture)]
