"""Fault injection: sample.py killed (SIGKILL, SIGTERM) while its video is being written."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from stepvideo_jax.configs import get_config
from stepvideo_jax.diffusion import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "sample_fault_driver.py")


def _start(out_dir, marker, pause):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    args = [
        sys.executable,
        DRIVER,
        str(marker),
        "1" if pause else "0",
        "--config=ti2v:tiny",
        f"--config.output_dir={out_dir}",
        "--config.prompt=kill me",
    ]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(marker, proc, timeout=300):
    t0 = time.time()
    while not os.path.exists(marker):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "the writer hook was never reached"
        time.sleep(0.1)


def test_kill_during_video_write_leaves_no_final_files_and_next_run_cleans(tmp_path):
    out = tmp_path / "out"
    # SIGTERM is handled like Ctrl-C: one line, exit 143, its own temporary files removed.
    proc = _start(out, tmp_path / "m2", pause=True)
    _wait_for(tmp_path / "m2", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: interrupted (SIGTERM)"), err
    assert os.listdir(out) == []

    # SIGKILL while ffmpeg has the first frame: nothing under a final name; only hidden per-process files.
    proc = _start(out, tmp_path / "m1", pause=True)
    _wait_for(tmp_path / "m1", proc)
    proc.kill()
    proc.communicate()
    left = sorted(os.listdir(out))
    assert left and all(name.startswith(".") and f".pid{proc.pid}." in name for name in left), left

    # The next run into the folder writes the final names and removes the killed run's files.
    cfg = get_config("ti2v:tiny")
    cfg.output_dir, cfg.prompt = str(out), "kill me"
    settings = pipeline.SampleSettings.from_config(cfg)
    video = np.zeros((settings.frames, settings.height, settings.width, 3), np.float32)
    paths = pipeline.save_video(video, settings)
    assert sorted(os.listdir(out)) == ["kill_me-seed1234.mp4", "kill_me-seed1234.png"]
    assert all(os.path.getsize(p) > 0 for p in paths.values())


def test_run_checkpoints_fall_back_past_a_truncated_step_but_never_past_a_changed_structure(tmp_path):
    import jax
    import pytest

    from stepvideo_jax.training.checkpointing import RunCheckpoints

    ckpts = RunCheckpoints(tmp_path / "checkpoints", save_every=1, max_to_keep=5, async_save=False)
    saved = {step: np.random.default_rng(step).standard_normal((64, 64)).astype(np.float32) for step in (1, 2, 3)}
    for step in (1, 2, 3):  # random values: the array files are large (they do not compress away)
        ckpts.save(step, {"w": saved[step]}, None, force=True)
    ckpts.wait()
    abstract = {"w": jax.ShapeDtypeStruct((64, 64), np.float32)}
    changed = {"w": jax.ShapeDtypeStruct((64, 64), np.float32), "v": jax.ShapeDtypeStruct((2,), np.float32)}
    moved = []
    with pytest.raises(ValueError, match=r"no checkpoint restores \(step 3: .*start a new --workdir"):
        ckpts.restore_newest_readable(changed, None, warn=moved.append)
    assert moved == [] and ckpts.all_steps() == [1, 2, 3]  # a structure change moves nothing

    for root, _, files in os.walk(tmp_path / "checkpoints" / "3"):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getsize(path) > 1000:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
    step, state = ckpts.restore_newest_readable(abstract, None, warn=moved.append)
    assert step == 2
    np.testing.assert_array_equal(np.asarray(state["w"]), saved[2])
    assert len(moved) == 1 and moved[0].startswith("checkpoint step 3 ") and "resumed from step 2" in moved[0]
    assert ckpts.all_steps() == [1, 2] and (tmp_path / "unreadable_checkpoints" / "3").is_dir()
    ckpts.close()
