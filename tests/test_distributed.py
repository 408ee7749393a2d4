"""Multi-process plumbing that runs inside one process: the launcher (plain Python children), its
environment, the per-process data slices and the launcher settings that distributed.initialize reads."""

import io
import json
import os
import sys
import time

import numpy as np
import pytest

from stepvideo_jax import distributed
from stepvideo_jax.data.pipeline import DataConfig, make_dataset
from stepvideo_jax.tools.launch import launch, process_env


def test_launcher_prefixes_output_and_stops_the_rest_on_failure():
    out = io.StringIO()
    sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]
    failing = [sys.executable, "-c", "import time, sys; time.sleep(1); print('failing'); sys.exit(3)"]
    t0 = time.monotonic()
    code = launch([sleeper, failing], num_processes=2, grace_s=2.0, out=out)
    elapsed = time.monotonic() - t0
    text = out.getvalue()
    assert code == 3, text
    assert elapsed < 30, f"the launcher took {elapsed:.0f} s to stop the sleeping process"
    assert "[p0] up" in text and "[p1] failing" in text
    assert "[launch] failed: process 1 exited with code 3" in text


def test_launcher_sets_each_process_environment():
    out = io.StringIO()
    show = [
        sys.executable,
        "-c",
        "import os; print(*(os.environ[k] for k in ('STEPVIDEO_PROCESS_ID', "
        "'STEPVIDEO_NUM_PROCESSES', 'JAX_COORDINATOR_ADDRESS', 'XLA_FLAGS', 'JAX_PLATFORMS')), sep='|')",
    ]
    assert launch(show, num_processes=3, devices_per_process=2, out=out) == 0
    lines = sorted(line for line in out.getvalue().splitlines() if line.startswith("[p"))
    assert len(lines) == 3
    coordinators = set()
    for i, line in enumerate(lines):
        prefix, values = line.split(" ", 1)
        pid, count, coordinator, xla_flags, platforms = values.split("|")
        assert (prefix, pid, count, platforms) == (f"[p{i}]", str(i), "3", "cpu")
        assert xla_flags.split().count("--xla_force_host_platform_device_count=2") == 1
        assert "device_count=8" not in xla_flags  # the pytest process's own count is replaced
        coordinators.add(coordinator)
    (coordinator,) = coordinators
    assert coordinator.startswith("127.0.0.1:") and int(coordinator.split(":")[1]) > 0


def test_launcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="process ids must be distinct"):
        launch(["true"], num_processes=2, process_ids=[0, 2])
    with pytest.raises(ValueError, match="needs --coordinator"):
        launch(["true"], num_processes=2, process_ids=[1])
    with pytest.raises(ValueError, match="coordinator must be HOST:PORT"):
        launch(["true"], num_processes=1, coordinator="localhost")


def test_launch_settings_from_environment(monkeypatch):
    env = process_env(
        {},
        coordinator="127.0.0.1:1234",
        num_processes=4,
        process_id=3,
        devices_per_process=1,
        init_timeout_s=7,
        heartbeat_timeout_s=9,
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.launch_settings() == dict(
        coordinator_address="127.0.0.1:1234",
        num_processes=4,
        process_id=3,
        initialization_timeout=7,
        heartbeat_timeout_seconds=9,
    )
    monkeypatch.setenv(distributed.PROCESS_ID_ENV, "4")
    with pytest.raises(distributed.DistributedError, match=r"STEPVIDEO_PROCESS_ID=4 is outside \[0, "):
        distributed.launch_settings()
    monkeypatch.delenv(distributed.PROCESS_ID_ENV)
    with pytest.raises(distributed.DistributedError, match="set both"):
        distributed.launch_settings()


def test_config_check_is_a_noop_in_one_process():
    distributed.check_same_everywhere({"a": 1}, "workdir")  # one process: nothing to compare
    assert distributed._fingerprint({"a": 1, "b": 2}) == distributed._fingerprint({"b": 2, "a": 1})
    assert distributed._fingerprint({"a": 1}) != distributed._fingerprint({"a": 2})


@pytest.fixture
def latent_index(tmp_path):
    """A precompute index of 12 items with one latent shape (one bucket); item i has motion score i."""
    os.makedirs(tmp_path / "items")
    rows = []
    for i in range(12):
        np.savez(
            tmp_path / "items" / f"{i}.npz",
            latents=np.full((3, 2, 2, 4), i, np.float32),
            condition=np.zeros((1, 2, 2, 4), np.float32),
            llm_states=np.zeros((3, 5), np.float32),
            llm_mask=np.ones(3, np.int32),
            clip_states=np.zeros((2, 5), np.float32),
            motion_score=np.float32(i),
        )
        rows.append({"latents": f"items/{i}.npz", "caption": f"item {i}"})
    (tmp_path / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / "index.jsonl")


def _items(batch) -> list[int]:
    return [int(s) for s in batch["motion_score"]]


@pytest.mark.parametrize("processes,batch", [(2, 2), (3, 2), (4, 1)])
def test_process_slices_are_disjoint_complete_and_form_the_single_process_batches(latent_index, processes, batch):
    cfg = DataConfig(manifest=latent_index, batch_size=batch, num_epochs=2, seed=3)
    single = [
        _items(b)
        for b in make_dataset(DataConfig(manifest=latent_index, batch_size=batch * processes, num_epochs=2, seed=3))
    ]
    per_process = [
        [_items(b) for b in make_dataset(cfg, process_index=i, process_count=processes)] for i in range(processes)
    ]
    assert len({len(p) for p in per_process}) == 1, "every process must get the same number of batches"
    steps = len(per_process[0])
    assert steps == len(single) == 24 // (batch * processes)
    # Global batch k (the processes' k-th batches in process order) is the single-process batch k.
    for k in range(steps):
        assert sum((p[k] for p in per_process), []) == single[k]
    # Within each epoch (12 items = steps / 2 global batches), the slices are disjoint and complete.
    for epoch in range(2):
        seen = [sum(p[epoch * steps // 2 : (epoch + 1) * steps // 2], []) for p in per_process]
        flat = sum(seen, [])
        assert sorted(flat) == list(range(12)), (epoch, seen)
