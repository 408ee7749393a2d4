"""Real multi-process jobs on the CPU: 2 processes x 2 simulated devices, started by
``python -m stepvideo_jax.tools.launch`` (gloo collectives, coordinator on 127.0.0.1), compared with one
process of 4 devices running the same mesh.

Every job starts fresh Python processes (several seconds each) and compiles tiny models, so the
programs are as small as the code paths allow. No persistent compilation cache: jax writes it from
process 0 only, so in a restarted job process 0 would load its programs while process 1 compiles.
Marked ``multiprocess`` (``pytest -m "not multiprocess"`` skips them).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

pytestmark = pytest.mark.multiprocess

# Loss tolerance of the 2-process run against the 1-process run of the same global batch and mesh:
# the batches, noise and programs are the same, but the cross-process all-reduces (gloo) sum the
# per-device partial sums in another order than XLA's in-process all-reduce, so losses differ in the
# last bits of float32 (measured: at most ~2e-7 relative over 10 steps) and Adam carries that along.
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def job_env():
    """Environment of every subprocess: this checkout first on the path, no launcher variables of an
    enclosing job, no persistent compilation cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPVIDEO_") and k != "JAX_COORDINATOR_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _single(env: dict, devices: int) -> dict:
    """One process with ``devices`` simulated CPU devices."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "", env.get("XLA_FLAGS", "")).split()
    return dict(
        env, XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]), JAX_PLATFORMS="cpu"
    )


def _launcher(*flags: str) -> list[str]:
    return [PY, "-m", "stepvideo_jax.tools.launch", *flags, "--"]


def _run(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _check(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


# ------------------------------------------------------------------------------------------ sampling
SAMPLE = [
    PY,
    "sample.py",
    "--config=configs/ti2v.py:tiny",
    "--config.mesh=data=2,fsdp=2",
    "--config.steps=2",
    "--config.height=32",
    "--config.width=48",
    "--config.progress=False",
]


def test_sampling_two_processes_equals_one_and_only_process_0_writes(job_env, tmp_path):
    one = _check(_run(SAMPLE + [f"--config.output_dir={tmp_path / 'one'}"], _single(job_env, 4), timeout=600))
    two = _check(
        _run(
            _launcher("--processes=2", "--devices_per_process=2")
            + SAMPLE
            + [f"--config.output_dir={tmp_path / 'two'}"],
            job_env,
            timeout=600,
        )
    )
    assert "wrote" in one
    # Both processes compute, process 0 alone writes: one video and one PNG in the shared folder
    # (a second writer would have added "-2" files), and only process 0 prints the paths.
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
    assert len(os.listdir(tmp_path / "two")) == 2
    assert re.search(r"^\[p0\] wrote .*\.mp4$", two, re.M) and not re.search(r"^\[p1\] wrote", two, re.M)
    import imageio.v3 as iio

    for name in os.listdir(tmp_path / "one"):  # the MP4's frames and the PNG (first | last frame, lossless)
        a = iio.imread(tmp_path / "one" / name).astype(np.int16)
        b = iio.imread(tmp_path / "two" / name).astype(np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, (name, np.abs(a - b).max())


# ------------------------------------------------------------------------------------------ training
def _latent_index(root) -> str:
    """16 precomputed items of one latent shape for the tiny DiT (8 channels, text widths 16 / 12)."""
    os.makedirs(root / "items")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        np.savez(
            root / "items" / f"{i:02d}.npz",
            latents=rng.standard_normal((3, 2, 2, 8)).astype(np.float32),
            condition=rng.standard_normal((1, 2, 2, 8)).astype(np.float32),
            llm_states=rng.standard_normal((8, 16)).astype(np.float32),
            llm_mask=np.ones(8, np.int32),
            clip_states=rng.standard_normal((5, 12)).astype(np.float32),
            motion_score=np.float32(i % 7),
        )
        rows.append({"latents": f"items/{i:02d}.npz", "caption": f"item {i}"})
    np.savez(
        root / "null_prompt.npz",
        llm_states=np.zeros((8, 16), np.float32),
        llm_mask=np.eye(1, 8, dtype=np.int32)[0],
        clip_states=np.zeros((5, 12), np.float32),
    )
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root / "index.jsonl")


STEPS = 10


def _train(index: str, workdir, losses, batch_size: int) -> list[str]:
    return [
        PY,
        "train.py",
        "--config=configs/train_ti2v.py:tiny",
        f"--config.data.manifest={index}",
        "--config.data.buckets=((32,32),)",
        f"--config.data.batch_size={batch_size}",
        f"--config.train.steps={STEPS}",
        "--config.train.log_every=1",
        "--config.train.tensorboard=False",
        "--config.checkpoint.every=2",
        "--config.checkpoint.keep=10",
        "--config.mesh=data=2,fsdp=2",
        f"--workdir={workdir}",
        f"--losses_json={losses}",
    ]


def _checkpoints(workdir) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(p) for p in os.listdir(d) if p.isdigit()) if os.path.isdir(d) else []


@pytest.mark.slow  # two multi-process training runs and a restart: minutes on 2 cores
def test_training_two_processes_equals_one_stops_on_kill_and_resumes(job_env, tmp_path):
    index = _latent_index(tmp_path / "data")
    # The reference: one process, 4 devices, global batch 4.
    _check(_run(_train(index, tmp_path / "one", tmp_path / "one.json", 4), _single(job_env, 4), timeout=600))
    reference = {int(k): v for k, v in json.loads((tmp_path / "one.json").read_text()).items()}
    assert sorted(reference) == list(range(STEPS))

    # 2 processes x 2 devices, batch 2 each; SIGKILL process 1 once the checkpoint of step 2 is on disk.
    two = tmp_path / "two"
    cmd = _launcher("--processes=2", "--devices_per_process=2", "--grace_s=5") + _train(
        index, two, tmp_path / "killed.json", 2
    )
    job = subprocess.Popen(cmd, env=job_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while not _checkpoints(two) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = dict(re.findall(r"^\[launch\] process (\d) of 2 started \(pid (\d+)", "".join(lines), re.M))
    assert _checkpoints(two) and set(pids) == {"0", "1"}, "".join(lines)[-4000:]
    os.kill(int(pids["1"]), signal.SIGKILL)
    t_kill = time.monotonic()
    code = job.wait(timeout=120)
    stopped_after = time.monotonic() - t_kill
    reader.join(timeout=10)
    out = "".join(lines)
    assert code == 128 + signal.SIGKILL, out[-4000:]
    assert "[launch] process 1 was killed by SIGKILL; stopping the others [0]" in out
    assert stopped_after < 30, f"the job took {stopped_after:.0f} s to stop after the kill"
    for pid in pids.values():  # no process of the job is left
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    killed_at = max(_checkpoints(two))
    assert killed_at < STEPS and not (tmp_path / "killed.json").exists()
    # Orbax wrote one multi-host checkpoint: shards and data-iterator state of both processes.
    step_dir = two / "checkpoints" / str(killed_at)
    assert sorted(os.listdir(step_dir / "data")) == ["commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(step_dir / "state"))

    # The restart resumes from the last checkpoint and continues the single-process loss curve.
    out = _check(_run(cmd[:-1] + [f"--losses_json={tmp_path / 'two.json'}"], job_env, timeout=600))
    assert f"resumed from step {killed_at}" in out
    resumed = {int(k): v for k, v in json.loads((tmp_path / "two.json").read_text()).items()}
    assert sorted(resumed) == list(range(killed_at, STEPS))
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=LOSS_RTOL), (step, loss, reference[step])


# ------------------------------------------------------------------------------------------ failures
def test_unreachable_coordinator_ends_with_one_line(job_env):
    from stepvideo_jax.tools.launch import free_port

    cmd = _launcher(
        "--processes=2", "--process_ids=1", f"--coordinator=127.0.0.1:{free_port()}", "--init_timeout_s=5"
    ) + [PY, "train.py", "--config=configs/train_ti2v.py:tiny", "--workdir=/nope"]
    t0 = time.monotonic()
    proc = _run(cmd, job_env, timeout=300)
    # 5 s of waiting plus the start-up (importing jax takes tens of seconds on a loaded machine);
    # without the timeout jax waits 300 s and then aborts with a stack dump.
    assert time.monotonic() - t0 < 150
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    p1 = [line for line in out.splitlines() if line.startswith("[p1]")]
    assert re.fullmatch(
        r"\[p1\] error: process 1 of 2 could not join the job at coordinator 127\.0\.0\.1:\d+ "
        r"within 5 s \(.*\)",
        p1[-1],
    ), p1[-5:]
    assert "Check failure" not in out  # ended before jax's own abort and stack dump


def test_config_mismatch_ends_every_process_with_one_line(job_env):
    from stepvideo_jax.tools.launch import launch

    def sample(seed):
        return [PY, "sample.py", "--config=configs/ti2v.py:tiny", f"--config.seed={seed}"]

    import io

    out = io.StringIO()
    t0 = time.monotonic()
    code = launch(
        [sample(1), sample(2)],
        num_processes=2,
        devices_per_process=1,
        init_timeout_s=60,
        env=job_env,
        cwd=ROOT,
        out=out,
        settle_s=30,
    )
    assert time.monotonic() - t0 < 120
    text = out.getvalue()
    assert code == 1, text[-3000:]
    for i in range(2):
        last = [line for line in text.splitlines() if line.startswith(f"[p{i}]")][-1]
        assert re.fullmatch(
            rf"\[p{i}\] error: the config differs between processes: process\(es\) \[1\] "
            r"disagree with process 0 \(hash [0-9a-f]{12}\); every process must run the same command",
            last,
        ), last
