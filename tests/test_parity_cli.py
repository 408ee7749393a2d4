"""`python -m stepvideo_jax.tools.parity` as a program: absl flags, exit codes."""

import os
import subprocess
import sys

import pytest
from absl import app

from stepvideo_jax.tools import parity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_prefix_is_a_usage_error_with_exit_code_2():
    with pytest.raises(app.UsageError) as e:
        parity.main(["parity"])
    assert e.value.exitcode == 2


def test_program_exits_2_on_a_malformed_fixture(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "stepvideo_jax.tools.parity", str(tmp_path / "broken")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "broken.json: not valid JSON" in proc.stderr and proc.stdout == ""
