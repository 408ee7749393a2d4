"""The README's training section, run as written: from raw MP4 clips to a video sampled from the trained
model. The commands are read from the README's first code block under "## Training" (so the README cannot
drift from what runs); the only change is 2 training steps (and 2 of warmup) instead of 300."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np

from stepvideo_jax.checkpoint import read_manifest
from stepvideo_jax.data.synthetic import caption_of, render_clip, sample_spec
from stepvideo_jax.video_io import read_mp4, write_mp4

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_AS_WRITTEN = {
    "--config.train.steps=300": "--config.train.steps=2",
    "--config.optim.total_steps=300": "--config.optim.total_steps=2",
    "--config.optim.warmup_steps=30": "--config.optim.warmup_steps=2",
}
CLIPS = (
    ("small", "red", "circle", "left"),
    ("large", "white", "square", "up"),
    ("small", "yellow", "triangle", "right"),
)


def _readme_training_commands() -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n## Training\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split("  #", 1)[0].strip()  # a trailing comment, as the README writes them
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def _write_clips(folder) -> None:
    """Three 17-frame MP4s and their captions: the user's footage in the README's layout."""
    rng = np.random.default_rng(0)
    (folder / "clips").mkdir()
    with open(folder / "clips.jsonl", "w") as f:
        for i, combo in enumerate(CLIPS):
            spec = sample_spec(rng, combo, frames=17, height=64, width=64, max_speed=0.6)
            write_mp4(str(folder / "clips" / f"clip{i}.mp4"), render_clip(spec, 17, 64, 64))
            f.write(json.dumps({"video": f"clips/clip{i}.mp4", "caption": caption_of(*combo)}) + "\n")


def test_the_readme_training_commands_go_from_mp4s_to_a_sampled_video(tmp_path):
    commands = _readme_training_commands()
    assert [c.split()[1] for c in commands] == [
        "-m",
        "train.py",
        "-m",
        "sample.py",
    ], commands  # motion scores, train, export, sample
    for flag in STEPS_AS_WRITTEN:
        assert flag in commands[1], (flag, commands[1])
    # The repository root as a fresh clone has it: the scripts and the package with the demo checkpoint.
    for name in ("train.py", "sample.py", "stepvideo_jax"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    _write_clips(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    for command in commands:
        for flag, short in STEPS_AS_WRITTEN.items():
            command = command.replace(flag, short)
        argv = shlex.split(command)
        assert argv[0] == "python"
        proc = subprocess.run(
            [sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, (command, proc.stderr[-3000:])

    entries = [json.loads(line) for line in open(tmp_path / "clips.jsonl")]
    assert all(isinstance(e["motion_score"], float) and e["motion_score"] > 0 for e in entries), entries
    steps = [int(n) for n in os.listdir(tmp_path / "runs" / "my_dit" / "checkpoints") if n.isdigit()]
    assert max(steps) == 2, steps
    exported = read_manifest(str(tmp_path / "checkpoints" / "my-dit"))
    assert sorted(exported["components"]) == ["hunyuan_clip", "step_llm", "transformer", "vae"]
    assert exported["components"]["transformer"]["dtype"] == "bfloat16"  # the base's dtype: the demo config reads it
    videos = sorted((tmp_path / "outputs" / "demo").glob("*.mp4"))
    assert [v.name for v in videos] == ["a_small_red_circle_moves_left-seed1234.mp4"]
    assert read_mp4(str(videos[0])).shape == (17, 64, 64, 3)
