"""What a user sees from sample.py: a quiet run (progress bars, output paths, timings; no INFO logs, no
backend probing, no fork warning), outputs with the umask's mode, batch generation from a JSON-lines
file that skips a bad item and finishes the others, and `--config.help`."""

import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=ti2v:tiny", "--config.frames=17", "--config.height=32", "--config.width=32", "--config.steps=2"]


def _sample(args, cwd, **kw):
    env = {**os.environ, "PYTHONPATH": ROOT}
    for name in ("TF_CPP_MIN_LOG_LEVEL", "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "sample.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        **kw,
    )


def _lines_besides_progress_bars(text: str) -> list[str]:
    lines = []
    for raw in text.split("\n"):
        shown = raw.split("\r")[-1].strip()  # what stays on screen after the carriage returns
        if shown and not re.search(r"\|\s*\d+/\d+ \[", shown):  # a finished tqdm bar
            lines.append(shown)
    return lines


def _umask_mode() -> int:
    old = os.umask(0)
    os.umask(old)
    return 0o666 & ~old


def test_a_sample_run_is_quiet_and_writes_readable_files(tmp_path):
    out = tmp_path / "out"
    proc = _sample([*TINY, f"--config.output_dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = _lines_besides_progress_bars(proc.stdout + "\n" + proc.stderr)
    assert len(lines) <= 10, lines
    text = proc.stdout + proc.stderr
    for noise in ("os.fork()", "Unable to initialize backend", "PyTorch was not found", "I1", "INFO"):
        assert noise not in text, noise
    assert any(line.startswith("wrote ") and line.endswith(".mp4") for line in lines)
    assert any(line.startswith("timings: ") for line in lines)
    files = sorted(os.listdir(out))
    assert [f.rsplit(".", 1)[1] for f in files] == ["mp4", "png"]
    for f in files:
        assert stat.S_IMODE(os.stat(out / f).st_mode) == _umask_mode(), f


def test_batch_generation_skips_a_bad_item_and_finishes_the_others(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:20, 8:20] = 255
    Image.fromarray(image).save(tmp_path / "square.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    lines = [
        {"image": "square.png", "prompt": "a square", "seed": 1, "name": "first"},
        {"image": "broken.png", "prompt": "a broken image", "seed": 2},
        {"image": "square.png", "prompt": "a square again", "motion_score": 2.0, "seed": 3},
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    out = tmp_path / "out"
    proc = _sample([*TINY, f"--config.output_dir={out}", f"--config.prompts={prompts}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = _lines_besides_progress_bars(proc.stdout + "\n" + proc.stderr)
    skipped = [s for s in shown if s.startswith("skipped")]
    assert len(skipped) == 2 and "line 4: not JSON" in skipped[0] and "line 2:" in skipped[1], shown
    assert "broken.png" in skipped[1] and "not a readable image file" in skipped[1]
    assert any(s.startswith("batch: 2 of 4 videos written") for s in shown), shown
    assert sorted(os.listdir(out)) == ["a_square_again-seed3.mp4", "a_square_again-seed3.png", "first.mp4", "first.png"]


@pytest.mark.parametrize("command", [["sample"], ["tools.config"]])
def test_config_help_lists_every_field_with_its_meaning(tmp_path, command):
    if command == ["sample"]:
        proc = _sample(["--config=demo", "--config.help"], cwd=tmp_path)
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "stepvideo_jax.tools.config", "demo"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(" = ", 1) for line in proc.stdout.splitlines())
    assert fields["steps"].startswith("30  # denoising (Euler) steps")
    assert fields["cfg"].startswith("4.0  # classifier-free guidance scale")
    assert "prompts" in fields
