"""Converter faults: a SIGKILLed conversion, a crash inside --overwrite's swap, then reruns."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from release_layout import build_release

from stepvideo_jax import checkpoint
from stepvideo_jax.checkpoint import read_manifest
from stepvideo_jax.components import convert_release

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leftovers(parent, base):
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{base}."))


def test_sigkill_mid_conversion_then_rerun_succeeds_and_cleans(tmp_path, fixture_prefix):
    src = tmp_path / "release"
    build_release(str(src), fixture_prefix, components=("hunyuan_clip",))
    dst = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")

    def start_and_pause(marker):
        proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "tests", "convert_fault_driver.py"),
                str(marker),
                f"--src={src}",
                f"--dst={dst}",
                "--components=hunyuan_clip",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        t0 = time.time()
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 300
            time.sleep(0.1)
        return proc

    # SIGTERM: handled like Ctrl-C, one line, the staging folder removed, no destination.
    proc = start_and_pause(tmp_path / "m1")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted (SIGTERM)"), err
    assert not dst.exists() and _leftovers(tmp_path, "ckpt") == []

    # SIGKILL: the staging folder stays behind until the next run.
    proc = start_and_pause(tmp_path / "m2")
    proc.kill()
    proc.communicate()
    assert not dst.exists() and _leftovers(tmp_path, "ckpt")  # a half-written staging folder, no destination

    logs = []
    convert_release(str(src), str(dst), components=["hunyuan_clip"], log=logs.append)
    assert read_manifest(dst)["components"]["hunyuan_clip"]["dtype"] == "bfloat16"
    assert _leftovers(tmp_path, "ckpt") == []
    assert any("removed (left by a killed run)" in line for line in logs), logs


def test_crash_between_the_overwrite_renames_is_recovered(tmp_path, monkeypatch):
    dst = tmp_path / "out"
    with checkpoint.staged_folder(dst, overwrite=False) as tmp:
        open(os.path.join(tmp, "version"), "w").write("1")
    real_replace = os.replace

    def crash_on_second(a, b):
        if ".out.tmp-" in a and os.path.basename(b) == "out":  # moving the new folder in: "dies" here
            raise SystemExit("killed")
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(SystemExit):
        with checkpoint.staged_folder(dst, overwrite=True) as tmp:
            open(os.path.join(tmp, "version"), "w").write("2")
    monkeypatch.setattr(os, "replace", real_replace)
    # Even in-process the old folder is put back; a real kill leaves it aside, recovered by the next run:
    assert (dst / "version").read_text() == "1" and _leftovers(tmp_path, "out") == []

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that is gone
    aside = tmp_path / f".out.old-{pid}-abc"
    aside.mkdir()
    real_replace(dst, aside / "replaced")
    (tmp_path / f".out.tmp-{pid}-def").mkdir()
    logs = []
    with pytest.raises(FileExistsError, match="destination exists"):
        with checkpoint.staged_folder(dst, overwrite=False, log=logs.append):
            pass
    assert (dst / "version").read_text() == "1" and _leftovers(tmp_path, "out") == []
    assert any("restored from" in line for line in logs), logs
    np.testing.assert_equal(len(logs), 3)


def test_staged_folder_gets_the_umasks_mode_not_mkdtemps(tmp_path):
    """The finished folder has mode 0o777 minus the umask, as `mkdir` would give it (0700 hides a
    shared checkpoint from the other users of a machine)."""
    old = os.umask(0o022)
    try:
        with checkpoint.staged_folder(tmp_path / "shared", overwrite=False) as tmp:
            open(os.path.join(tmp, "x"), "w").close()
        os.umask(0o027)
        with checkpoint.staged_folder(tmp_path / "group", overwrite=False):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "group").stat().st_mode & 0o777 == 0o750
