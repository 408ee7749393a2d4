"""Runs one command as N JAX processes on this machine, the way every worker of a TPU pod slice runs
the same program: a rehearsal of a pod job (and what the multi-process tests use).

    python -m stepvideo_jax.tools.launch --processes=2 --devices_per_process=2 -- \\
        python sample.py --config=configs/ti2v.py:tiny --config.mesh=fsdp=4

Every process gets the coordinator (``JAX_COORDINATOR_ADDRESS``, 127.0.0.1 and a free port unless
``--coordinator`` is given), its id and the process count (``STEPVIDEO_PROCESS_ID``,
``STEPVIDEO_NUM_PROCESSES``), ``STEPVIDEO_DISTRIBUTED=1``, the CPU backend with
``--devices_per_process`` simulated devices (``XLA_FLAGS``) and the initialisation / heartbeat timeouts;
``stepvideo_jax.distributed.initialize()`` turns these into ``jax.distributed.initialize(...)`` with gloo
collectives. Output lines are streamed with a ``[pI]`` prefix. If any process fails (non-zero exit or
a signal), the others get ``--settle_s`` to end on their own (a failure every process detects, such
as a config mismatch, then reports it everywhere), then SIGTERM, then SIGKILL after ``--grace_s``, and
the launcher exits with the first failure's code (128 + signal for a signal). Each process also dies
with the launcher (Linux).

``--process_ids=2,3 --coordinator=HOST:PORT`` starts only some of the processes: the rest run on
another machine with the same command (a two-machine rehearsal). On real TPU pods use
``scripts/tpu_launch.sh`` instead (docs/tpu.md).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from absl import app, flags

__all__ = ["launch", "process_env", "free_port", "main"]

_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the coordinator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_env(
    base: dict[str, str],
    *,
    coordinator: str,
    num_processes: int,
    process_id: int,
    devices_per_process: int,
    init_timeout_s: int,
    heartbeat_timeout_s: int,
) -> dict[str, str]:
    """The environment of one process: ``base`` plus the coordinator, ids, timeouts, the CPU backend
    and the simulated device count (replacing any device count already in ``XLA_FLAGS``)."""
    env = dict(base)
    xla_flags = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join(xla_flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COORDINATOR_ADDRESS=coordinator,
        STEPVIDEO_DISTRIBUTED="1",
        STEPVIDEO_NUM_PROCESSES=str(num_processes),
        STEPVIDEO_PROCESS_ID=str(process_id),
        STEPVIDEO_INIT_TIMEOUT_S=str(init_timeout_s),
        STEPVIDEO_HEARTBEAT_TIMEOUT_S=str(heartbeat_timeout_s),
        PYTHONUNBUFFERED="1",
    )
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the launcher dies (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _stream(proc: subprocess.Popen, prefix: str, out: TextIO, lock: threading.Lock) -> None:
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        with lock:
            out.write(f"{prefix} {line}\n")
            out.flush()
    proc.stdout.close()


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def launch(
    commands: Sequence[Sequence[str]] | Sequence[str],
    *,
    num_processes: int,
    devices_per_process: int = 1,
    process_ids: Sequence[int] | None = None,
    coordinator: str | None = None,
    init_timeout_s: int = 60,
    heartbeat_timeout_s: int = 30,
    grace_s: float = 10.0,
    settle_s: float = 2.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    out: TextIO | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> int:
    """Starts ``commands`` (one argv for every process, or one argv per started process) as processes
    ``process_ids`` (default all) of a ``num_processes`` job and waits; returns 0 if all succeed, else
    the first failure's exit code after stopping the others. ``on_start(process_id, pid)`` is called
    for each started process."""
    out = out or sys.stdout
    ids = list(range(num_processes)) if process_ids is None else [int(i) for i in process_ids]
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError(f"processes and devices_per_process must be >= 1; got {num_processes}, {devices_per_process}")
    if not ids or len(set(ids)) != len(ids) or not all(0 <= i < num_processes for i in ids):
        raise ValueError(f"process ids must be distinct and in [0, {num_processes}); got {ids}")
    if commands and isinstance(commands[0], str):
        commands = [list(commands)] * len(ids)
    commands = [list(c) for c in commands]
    if len(commands) != len(ids) or not all(commands):
        raise ValueError(
            f"expected one non-empty command, or one per started process ({len(ids)}); got {len(commands)}"
        )
    if coordinator is None:
        if process_ids is not None and len(ids) < num_processes:
            raise ValueError("starting only some processes needs --coordinator=HOST:PORT (shared with the others)")
        coordinator = f"127.0.0.1:{free_port()}"
    elif not re.fullmatch(r"[^\s:]+:\d+", coordinator):
        raise ValueError(f"coordinator must be HOST:PORT; got {coordinator!r}")

    lock = threading.Lock()
    procs: dict[int, subprocess.Popen] = {}
    readers = []

    def stop_all(signum: int) -> None:
        for p in procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signum)
                except ProcessLookupError:
                    pass

    def say(msg: str) -> None:
        with lock:
            out.write(f"[launch] {msg}\n")
            out.flush()

    failure: tuple[int, int] | None = None  # (process id, returncode)
    try:
        base = dict(os.environ if env is None else env)
        for pid_, cmd in zip(ids, commands):
            penv = process_env(
                base,
                coordinator=coordinator,
                num_processes=num_processes,
                process_id=pid_,
                devices_per_process=devices_per_process,
                init_timeout_s=init_timeout_s,
                heartbeat_timeout_s=heartbeat_timeout_s,
            )
            p = subprocess.Popen(
                cmd,
                env=penv,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            procs[pid_] = p
            say(
                f"process {pid_} of {num_processes} started (pid {p.pid}, {devices_per_process} devices, "
                f"coordinator {coordinator})"
            )
            if on_start is not None:
                on_start(pid_, p.pid)
            t = threading.Thread(target=_stream, args=(p, f"[p{pid_}]", out, lock), daemon=True)
            t.start()
            readers.append(t)
        running = dict(procs)
        while running and failure is None:
            time.sleep(0.05)
            for i, p in list(running.items()):
                code = p.poll()
                if code is None:
                    continue
                del running[i]
                if code != 0:
                    failure = (i, code)
                    break
        if failure is not None:
            i, code = failure
            others = [j for j, p in procs.items() if p.poll() is None]
            say(f"process {i} {_describe(code)}; stopping the others {others}")
            deadline = time.monotonic() + settle_s
            while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop_all(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop_all(signal.SIGKILL)
    except BaseException:  # KeyboardInterrupt, SystemExit from a signal: never leave processes behind
        stop_all(signal.SIGKILL)
        raise
    finally:
        for p in procs.values():
            p.wait()
        for t in readers:
            t.join(timeout=5)
    if failure is not None:
        say(f"failed: process {failure[0]} {_describe(failure[1])}")
        return _exit_code(failure[1])
    return 0


_PROCESSES = flags.DEFINE_integer("processes", 2, "number of JAX processes of the job")
_DEVICES = flags.DEFINE_integer("devices_per_process", 1, "simulated CPU devices per process")
_PROCESS_IDS = flags.DEFINE_list(
    "process_ids", None, "start only these process ids (default: all); needs --coordinator"
)
_COORDINATOR = flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0 (default: 127.0.0.1 and a free port)")
_INIT_TIMEOUT = flags.DEFINE_integer("init_timeout_s", 60, "seconds a process waits for the others to join")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 30, "seconds without a heartbeat before a process counts as dead"
)
_GRACE = flags.DEFINE_float("grace_s", 10.0, "seconds between SIGTERM and SIGKILL when stopping the others")
_SETTLE = flags.DEFINE_float("settle_s", 2.0, "seconds the others get to end on their own after a failure")


def main(argv: Sequence[str]) -> None:
    command = list(argv[1:])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise app.UsageError("give the command after --, e.g. -- python sample.py --config=configs/ti2v.py:tiny")

    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = launch(
            command,
            num_processes=_PROCESSES.value,
            devices_per_process=_DEVICES.value,
            process_ids=_PROCESS_IDS.value,
            coordinator=_COORDINATOR.value,
            init_timeout_s=_INIT_TIMEOUT.value,
            heartbeat_timeout_s=_HEARTBEAT.value,
            grace_s=_GRACE.value,
            settle_s=_SETTLE.value,
        )
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    sys.exit(code)


if __name__ == "__main__":
    app.run(main)
