"""Multi-host runs: ``jax.distributed.initialize()`` on TPU VM pods (or when asked), and who writes.

Call ``initialize()`` at the very start of a program (before anything asks jax for devices). On a
single host it does nothing unless forced. On a TPU VM pod slice every worker runs the same program
(``scripts/tpu_launch.sh``); the TPU runtime tells jax the coordinator, so no arguments are needed.
Only process 0 writes videos, logs and manifests (``is_main_process()``); data loading is sharded by
process (``process_slice``).

Off TPU (``python -m stepvideo_jax.tools.launch`` runs N local CPU processes, or any launcher that
sets the same variables): ``JAX_COORDINATOR_ADDRESS`` (read by jax itself), ``STEPVIDEO_NUM_PROCESSES``
and ``STEPVIDEO_PROCESS_ID`` say where this process belongs, ``STEPVIDEO_INIT_TIMEOUT_S`` and
``STEPVIDEO_HEARTBEAT_TIMEOUT_S`` bound how long it waits for the others. ``start(...)`` is what the
CLIs call: initialise, then check that every process runs the same config; a failure of either ends
the process with one ``error: ...`` line instead of a hang or a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import numpy as np

__all__ = [
    "initialize",
    "start",
    "check_same_everywhere",
    "barrier",
    "launch_settings",
    "DistributedError",
    "on_tpu_pod",
    "is_main_process",
    "process_slice",
    "process_count",
    "process_index",
    "NUM_PROCESSES_ENV",
    "PROCESS_ID_ENV",
    "INIT_TIMEOUT_ENV",
    "HEARTBEAT_TIMEOUT_ENV",
]

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"  # jax reads it too
NUM_PROCESSES_ENV = "STEPVIDEO_NUM_PROCESSES"
PROCESS_ID_ENV = "STEPVIDEO_PROCESS_ID"
INIT_TIMEOUT_ENV = "STEPVIDEO_INIT_TIMEOUT_S"
HEARTBEAT_TIMEOUT_ENV = "STEPVIDEO_HEARTBEAT_TIMEOUT_S"

T = TypeVar("T")

_INITIALIZED = False


def on_tpu_pod() -> bool:
    """True on a multi-host TPU VM slice (the runtime lists more than one worker) or a multi-slice job."""
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    return len(hosts) > 1 or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


class DistributedError(RuntimeError):
    """The multi-process runtime could not start, or the processes disagree (one-line message)."""


def _env_int(name: str, minimum: int) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < minimum:
        raise DistributedError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def launch_settings() -> dict[str, Any]:
    """``jax.distributed.initialize`` arguments from the environment a launcher set (empty on a TPU
    pod, where the runtime supplies them)."""
    kwargs: dict[str, Any] = {}
    count, index = _env_int(NUM_PROCESSES_ENV, 1), _env_int(PROCESS_ID_ENV, 0)
    if (count is None) != (index is None):
        raise DistributedError(f"set both {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV}, or neither")
    if count is not None:
        if index >= count:
            raise DistributedError(f"{PROCESS_ID_ENV}={index} is outside [0, {NUM_PROCESSES_ENV}={count})")
        if not os.environ.get(COORDINATOR_ENV):
            raise DistributedError(f"{NUM_PROCESSES_ENV} is set but {COORDINATOR_ENV} (HOST:PORT) is not")
        kwargs.update(coordinator_address=os.environ[COORDINATOR_ENV], num_processes=count, process_id=index)
    timeout = _env_int(INIT_TIMEOUT_ENV, 1)
    if timeout is not None:
        kwargs["initialization_timeout"] = timeout
    heartbeat = _env_int(HEARTBEAT_TIMEOUT_ENV, 1)
    if heartbeat is not None:
        kwargs["heartbeat_timeout_seconds"] = heartbeat
    return kwargs


def _on_cpu() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    return platforms.split(",")[0].strip() == "cpu"


def _exit_with(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(1)


def initialize(force: bool | None = None, **kwargs) -> bool:
    """Initialises jax's multi-process runtime when on a TPU pod, when ``force`` is True, or when
    ``STEPVIDEO_DISTRIBUTED=1``; ``force=False`` never does. ``kwargs`` (coordinator_address,
    num_processes, process_id, ...) go to ``jax.distributed.initialize``; off TPU they default to the
    launcher's environment (``launch_settings()``). On the CPU backend the cross-process collectives
    are gloo. Returns whether the runtime is (now) initialised. If the job does not come together
    within the initialisation timeout (coordinator unreachable, a process missing) the process ends
    with one ``error: ...`` line on stderr and exit code 1."""
    global _INITIALIZED
    if _INITIALIZED:
        return True
    if force is None:
        force = on_tpu_pod() or os.environ.get("STEPVIDEO_DISTRIBUTED", "") == "1"
    if not force:
        return False
    kwargs = {**launch_settings(), **kwargs}
    if _on_cpu():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = kwargs.get("coordinator_address") or os.environ.get(COORDINATOR_ENV) or "(from the TPU runtime)"
    who = "this process"
    if "num_processes" in kwargs:
        who = f"process {kwargs['process_id']} of {kwargs['num_processes']}"
    timeout = int(kwargs.get("initialization_timeout", 300))
    message = (
        f"error: {who} could not join the job at coordinator {where} within {timeout} s "
        f"(are all processes started, with the same coordinator and process count?)"
    )
    # jax's client aborts the whole process (a C++ fatal error and a stack dump) when it cannot connect
    # in time; this watchdog ends it first with one line, and jax gets a longer deadline than ours.
    watchdog = threading.Timer(timeout, _exit_with, args=(message,))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**dict(kwargs, initialization_timeout=timeout + 60))
    finally:
        watchdog.cancel()
    _INITIALIZED = True
    return True


def _fingerprint(value: Any) -> bytes:
    """sha256 of a config (``ml_collections.ConfigDict``, dict, str, ...) in a canonical JSON form."""
    if hasattr(value, "to_json_best_effort"):
        text = value.to_json_best_effort(sort_keys=True)
    else:
        text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).digest()


def check_same_everywhere(*values: Any, what: str = "config") -> None:
    """Raises ``DistributedError`` naming the processes whose ``values`` differ from process 0's
    (a 32-byte hash per process, compared through one all-gather). A no-op in a single process."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = np.frombuffer(_fingerprint([_fingerprint(v).hex() for v in values]), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest))  # [processes, 32]
    differ = [i for i in range(every.shape[0]) if not np.array_equal(every[i], every[0])]
    if differ:
        raise DistributedError(
            f"the {what} differs between processes: process(es) {differ} disagree with process 0 "
            f"(hash {every[0].tobytes().hex()[:12]}); every process must run the same command"
        )


def start(*agreed: Any, what: str = "config") -> bool:
    """What the CLIs call first: ``initialize()``, then ``check_same_everywhere(*agreed)``. A failure
    ends the process with one ``error: ...`` line (SystemExit). Returns whether it is multi-process."""
    try:
        multi = initialize()
        if multi:
            check_same_everywhere(*agreed, what=what)
    except DistributedError as e:
        raise SystemExit(f"error: {e}") from None
    return multi


_BARRIERS = 0


def barrier(what: str, timeout_s: int = 900) -> None:
    """Waits until every process gets here (through the coordination service, not a device collective).
    A no-op in one process. Used after compiling a program with cross-process collectives: gloo gives a
    process 30 s to join a collective's first run, and the processes may finish compiling further apart
    (e.g. when one loads the program from a persistent compilation cache, which only process 0 writes)."""
    global _BARRIERS
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    _BARRIERS += 1  # barrier names must be unique; every process calls the same barriers in the same order
    multihost.sync_global_processes(f"stepvideo:{_BARRIERS}:{what}", timeout=timeout_s)


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
