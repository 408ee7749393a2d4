"""Test setup: 8 simulated CPU devices (set before jax is imported) and the reference fixtures."""

import os

_flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
if "--xla_backend_optimization_level" not in _flags:
    # LLVM at -O0: at the default level XLA's CPU backend spends most of this suite compiling (one
    # truncated-normal initializer of an odd shape takes seconds; -O0 cut the shipped-checkpoint
    # sample test from 99 s to 21 s). It changes code generation only, not the arithmetic (no fast
    # math at either level); subprocesses the tests start inherit it.
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from stepvideo_jax.parity.fixtures import FIXTURES_ENV, fixtures_dir  # noqa: E402


@pytest.fixture(scope="session")
def reference_dir() -> str:
    path = fixtures_dir()
    if not os.path.isdir(path):
        pytest.skip(f"reference fixtures not found at {path} (set {FIXTURES_ENV} or place ../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def fixture_prefix(reference_dir):
    def prefix(name: str) -> str:
        p = os.path.join(reference_dir, name)
        if not os.path.isfile(p + ".json"):
            pytest.skip(f"reference fixture {name} not found in {reference_dir}")
        return p

    return prefix
