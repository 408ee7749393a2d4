"""Shared helpers for the benchmark scripts: timing medians, machine facts, matmul peak."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["median_seconds", "machine_description", "matmul_peak_flops", "fmt_bytes", "md_table"]


def median_seconds(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 7) -> float:
    """Median wall seconds of `fn()` (which must block until its result is ready) after warm-up."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; jax {jax.__version__} on {jax.default_backend()} "
        f"({len(jax.devices())} device(s))"
    )


def matmul_peak_flops(sizes: tuple[int, ...] = (2048, 4096), dtype=jnp.float32) -> tuple[float, int]:
    """The machine's practical matmul peak: the best median FLOP/s of large square `jnp.dot`s in
    `dtype` over `sizes`; returns (FLOP/s, the size that reached it)."""
    best = (0.0, 0)
    for n in sizes:
        k1, k2 = jax.random.split(jax.random.key(0))
        a = jax.random.normal(k1, (n, n), dtype)
        b = jax.random.normal(k2, (n, n), dtype)
        f = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
        secs = median_seconds(lambda f=f, a=a, b=b: f(a, b), warmup=2, repeats=7)
        best = max(best, (2.0 * n**3 / secs, n))
    return best


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def md_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
