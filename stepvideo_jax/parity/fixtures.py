"""Reading the reference fixtures: `PREFIX.json`, `PREFIX.weights.safetensors`, `PREFIX.io.safetensors`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from safetensors.numpy import load_file

__all__ = ["Fixture", "FixtureError", "load_fixture", "fixtures_dir", "FIXTURES_ENV"]

FIXTURES_ENV = "STEPVIDEO_FIXTURES"


def fixtures_dir() -> str:
    """The reference fixtures folder: $STEPVIDEO_FIXTURES, else ../shared/fixtures/reference from the
    current directory (the repository root, where the tests and `make parity` run)."""
    if os.environ.get(FIXTURES_ENV):
        return os.environ[FIXTURES_ENV]
    return os.path.normpath(os.path.join(os.getcwd(), "..", "shared", "fixtures", "reference"))


class FixtureError(ValueError):
    """A fixture that is missing a file, a field or a tensor."""


@dataclasses.dataclass(frozen=True)
class Fixture:
    prefix: str
    kind: str
    config: dict[str, Any]
    call: dict[str, Any]
    weights_path: str
    io: dict[str, np.ndarray]

    def tensor(self, name: str) -> np.ndarray:
        if name not in self.io:
            raise FixtureError(f"{self.prefix}.io.safetensors: missing tensor {name!r} (has {sorted(self.io)})")
        return self.io[name]


def load_fixture(prefix: str) -> Fixture:
    prefix = prefix[:-5] if prefix.endswith(".json") else prefix
    meta_file = prefix + ".json"
    if not os.path.isfile(meta_file):
        raise FixtureError(f"{meta_file}: not found (PREFIX is a fixture path without its suffix)")
    try:
        with open(meta_file) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise FixtureError(f"{meta_file}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str) or not isinstance(meta.get("config"), dict):
        raise FixtureError(f"{meta_file}: expected an object with a string 'kind' and a 'config' object")
    for suffix in (".weights.safetensors", ".io.safetensors"):
        if not os.path.isfile(prefix + suffix):
            raise FixtureError(f"{prefix + suffix}: not found")
    try:
        io = load_file(prefix + ".io.safetensors")
    except Exception as e:  # safetensors raises its own types on a corrupt header
        raise FixtureError(f"{prefix}.io.safetensors: not a readable safetensors file ({e})") from e
    return Fixture(
        prefix=prefix,
        kind=meta["kind"],
        config=meta["config"],
        call=meta.get("call") or {},
        weights_path=prefix + ".weights.safetensors",
        io=io,
    )
