"""Deviceless TPU targets: compile-only TPU devices from ``libtpu`` on a machine without TPUs, the
chips' published figures, and what the plan tool reads out of a compiled TPU program.

``topology_devices("v5p:2x2x1")`` returns the compile-only devices of a TPU topology
(``jax.experimental.topologies``); a ``Mesh`` built from them lowers and compiles any jitted program
with the TPU compiler, whatever ``JAX_PLATFORMS`` says (the CPU backend keeps running beside it).

Topology names are JAX's (``v5e:2x4``, ``v6e:2x2``, ``v5p:2x2x1``, ``v4:2x2x1``; chips per axis).
The familiar slice names are accepted too (``SLICE_TOPOLOGIES``): v5e / v6e slices count chips
(``v5e-8`` = ``v5litepod-8`` = ``v5e:2x4``), v5p and v4 slices count TensorCores, two per chip
(``v5p-8`` = 4 chips = ``v5p:2x2x1``, ``v5p-16`` = ``v5p:2x2x2``, ``v5p-64`` = ``v5p:2x4x4``).
Slices with fewer chips than a host holds (``v5e:1x1``) are compiled with the chips-per-host bound
set to the slice itself.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import Counter

__all__ = [
    "ChipSpec",
    "CHIPS",
    "SLICE_TOPOLOGIES",
    "resolve_topology",
    "topology_devices",
    "chip_spec",
    "hlo_collectives",
    "mosaic_kernel_count",
    "xla_optimal_seconds",
    "COLLECTIVES",
]


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """Published per-chip figures (Google Cloud TPU documentation): HBM, dense bf16 peak, HBM bandwidth."""

    name: str
    hbm_bytes: int
    peak_bf16_flops: float
    hbm_bytes_per_second: float


GiB = 1024**3
# device_kind of the compile-only devices -> chip figures.
CHIPS = {
    "TPU v4": ChipSpec("v4", 32 * GiB, 275e12, 1228e9),
    "TPU v5 lite": ChipSpec("v5e", 16 * GiB, 197e12, 819e9),
    "TPU v5": ChipSpec("v5p", 95 * GiB, 459e12, 2765e9),
    "TPU v6 lite": ChipSpec("v6e", 32 * GiB, 918e12, 1640e9),
}

# Familiar slice names -> JAX topology names (chips per ICI axis).
_CHIP_SLICES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_CORE_SLICES_3D = {8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8", 512: "4x8x8"}
SLICE_TOPOLOGIES = {
    **{f"v5e-{n}": f"v5e:{t}" for n, t in _CHIP_SLICES_2D.items()},
    **{f"v5litepod-{n}": f"v5e:{t}" for n, t in _CHIP_SLICES_2D.items()},
    **{f"v6e-{n}": f"v6e:{t}" for n, t in _CHIP_SLICES_2D.items()},
    **{f"v5p-{n}": f"v5p:{t}" for n, t in _CORE_SLICES_3D.items()},
    **{f"v4-{n}": f"v4:{t}" for n, t in _CORE_SLICES_3D.items()},
}
_TOPOLOGY = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})$")


def resolve_topology(target: str) -> str:
    """A topology or slice name -> the JAX topology name (``v5p-16`` -> ``v5p:2x2x2``)."""
    name = SLICE_TOPOLOGIES.get(target.strip().lower(), target.strip())
    if not _TOPOLOGY.match(name):
        raise ValueError(
            f"--target {target!r} is not a TPU topology: expected GEN:AxB[xC] with GEN in v4, v5e, v5p, v6e "
            f"(e.g. v5e:2x4, v5p:2x2x1) or a slice name such as {', '.join(list(SLICE_TOPOLOGIES)[:3])}, v5p-8"
        )
    return name


def _quiet_libtpu() -> None:
    """libtpu looks for the TPU VM's metadata (accelerator type, worker hostnames) when it starts and
    warns when there is none; a compile-only topology needs neither. Only set where absent, so a real
    TPU VM's values win; ALLOW_MULTIPLE_LIBTPU_LOAD lets several planning processes share libtpu."""
    for key, value in (
        ("TPU_SKIP_MDS_QUERY", "1"),
        ("TPU_ACCELERATOR_TYPE", "v5p-8"),
        ("TPU_WORKER_HOSTNAMES", "localhost"),
        ("TPU_WORKER_ID", "0"),
        ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"),
        ("TF_CPP_MIN_LOG_LEVEL", "2"),
    ):
        os.environ.setdefault(key, value)


def topology_devices(target: str) -> list:
    """The compile-only devices of a TPU topology (needs ``libtpu``; no TPU)."""
    name = resolve_topology(target)
    try:
        import libtpu  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"--target {target} needs libtpu (pip install 'jax[tpu]'): {e}") from None
    _quiet_libtpu()
    from jax.experimental import topologies

    dims = [int(d) for d in name.split(":")[1].split("x")]
    kwargs = {}
    if math.prod(dims) < 4:  # smaller than a host's default 2x2x1 chips: the host is the slice
        kwargs["chips_per_host_bounds"] = tuple(dims + [1] * (3 - len(dims)))
    return list(topologies.get_topology_desc(topology_name=name, platform="tpu", **kwargs).devices)


def chip_spec(device_kind: str) -> ChipSpec:
    if device_kind not in CHIPS:
        raise ValueError(f"no chip figures for device kind {device_kind!r}; known: {', '.join(CHIPS)}")
    return CHIPS[device_kind]


# ------------------------------------------------------------------------------------- HLO reading
COLLECTIVES = ("all-gather", "reduce-scatter", "all-to-all", "all-reduce", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1,
}  # fmt: skip
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(.*?)\s+([a-z][\w\-]*)\(")
_CHAIN = re.compile(r'chain_id="(\d+)"')
_CHANNEL = re.compile(r"channel_id=(\d+)")
_ARRAY = re.compile(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]")


def _array_bytes(type_text: str) -> list[int]:
    out = []
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype in _DTYPE_BYTES:
            out.append(_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d))
    return out


def hlo_collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Collective instructions of a compiled (per-device) HLO module: name -> {count, bytes}, each
    counted once wherever it sits (a loop body once), bytes = its result per device. An async
    ``-start`` counts its destination buffer (``-done`` is not counted again); the TPU compiler's
    async collective fusions repeat one collective in the start / continuation / done fusions of a
    chain (same ``chain_id``): counted once."""
    counts: Counter = Counter()
    nbytes: Counter = Counter()
    seen_chains: set = set()
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        type_text, opcode = m.groups()
        base = opcode.removesuffix("-start")
        if base not in COLLECTIVES:
            continue
        chain = _CHAIN.search(line)
        if chain:
            key = (base, chain.group(1), _CHANNEL.search(line).group(1) if _CHANNEL.search(line) else "")
            if key in seen_chains:
                continue
            seen_chains.add(key)
        sizes = _array_bytes(type_text)
        if opcode.endswith("-start") and len(sizes) > 1:
            # (operand(s), result, [context scalars]): the largest buffer after the operand
            sizes = [max(sizes[1:])] if base != "all-reduce" else sizes[: len(sizes) // 2 or 1]
        counts[base] += 1
        nbytes[base] += sum(sizes)
    return {k: {"count": counts[k], "bytes": nbytes[k]} for k in COLLECTIVES if counts[k]}


def mosaic_kernel_count(hlo_text: str) -> int:
    """Pallas kernels compiled for the TPU (Mosaic custom calls) in a compiled HLO module."""
    return hlo_text.count('custom_call_target="tpu_custom_call"')


def xla_optimal_seconds(cost: dict, hlo_text: str) -> float:
    """The TPU cost model's ``optimal_seconds`` of a compiled program with its unpriced instructions
    put back: it adds -1 for each ``ConcatBitcast`` custom call (a layout no-op it does not price);
    Mosaic kernels (``tpu_custom_call``) count 0. Raises if the figure is still negative."""
    unpriced = hlo_text.count('custom_call_target="ConcatBitcast"')
    seconds = float(cost.get("optimal_seconds", float("nan"))) + unpriced
    if not seconds >= 0:
        raise RuntimeError(
            f"TPU cost model optimal_seconds is {seconds - unpriced} with {unpriced} ConcatBitcast calls: "
            "another unpriced instruction; cannot estimate the XLA time"
        )
    return seconds
