"""Multi-host runs: ``jax.distributed.initialize()`` on TPU VM pods (or when asked), and who writes.

Call ``initialize()`` at the very start of a program (before anything asks jax for devices). On a
single host it does nothing unless forced. On a TPU VM pod slice every worker runs the same program
(``scripts/tpu_launch.sh``); the TPU runtime tells jax the coordinator, so no arguments are needed.
Only process 0 writes videos, logs and manifests (``is_main_process()``); data loading is sharded by
process (``process_slice``).
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import jax

__all__ = ["initialize", "on_tpu_pod", "is_main_process", "process_slice", "process_count", "process_index"]

T = TypeVar("T")

_INITIALIZED = False


def on_tpu_pod() -> bool:
    """True on a multi-host TPU VM slice (the runtime lists more than one worker) or a multi-slice job."""
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return len(hosts) > 1 or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def initialize(force: bool | None = None, **kwargs) -> bool:
    """Initialises jax's multi-process runtime when on a TPU pod, when ``force`` is True, or when
    ``STEPVIDEO_DISTRIBUTED=1``; ``force=False`` never does. ``kwargs`` (coordinator_address,
    num_processes, process_id, ...) go to ``jax.distributed.initialize`` (needed off TPU).
    Returns whether the runtime is (now) initialised."""
    global _INITIALIZED
    if _INITIALIZED:
        return True
    if force is None:
        force = on_tpu_pod() or os.environ.get("STEPVIDEO_DISTRIBUTED", "") == "1"
    if not force:
        return False
    jax.distributed.initialize(**kwargs)
    _INITIALIZED = True
    return True


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main_process() -> bool:
    """Process 0 writes videos, logs and manifests; the others only compute."""
    return jax.process_index() == 0


def process_slice(items: Sequence[T], index: int | None = None, count: int | None = None) -> list[T]:
    """This process's share of ``items`` (every ``count``-th item from ``index``)."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is outside [0, {count})")
    return list(items[index::count])
