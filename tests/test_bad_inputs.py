"""Bad input, one table per boundary: the command (or function), the expected exit code (or error),
a fragment of the one-line message, no traceback, and no files left behind.

CLI cases run through `tests/cli_driver.py`: one interpreter per tool, one fork per case."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from release_layout import build_release
from safetensors.numpy import load_file, save_file

from stepvideo_jax import components
from stepvideo_jax.configs import get_config
from stepvideo_jax.convert.core import ConversionError
from stepvideo_jax.data.manifest import read_manifest as read_training_manifest
from stepvideo_jax.diffusion.pipeline import SampleSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP_WEIGHTS = "hunyuan_clip/clip_text_encoder/model.safetensors"
CLIP_CONFIG = "hunyuan_clip/clip_text_encoder/config.json"


def _run_cases(module, cases):
    """[(argv, rc, fragment)] -> runs them all in one driver process; asserts each."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "cli_driver.py"), module, json.dumps([c[0] for c in cases])],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = [s for s in proc.stdout.splitlines() if s.startswith("CLI_RESULTS ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    for (argv, rc, fragment), got in zip(cases, json.loads(line[0][len("CLI_RESULTS ") :])):
        out = got["output"]
        errors = [s for s in out.splitlines() if s.startswith("error:")]
        assert got["rc"] == rc, (argv, got)
        assert "Traceback" not in out, (argv, out)
        assert len(errors) == 1 and fragment in errors[0], (argv, fragment, out)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(r, n), folder) for r, ds, fs in os.walk(folder) for n in fs + ds)


def _png_header(path, width, height):
    """A PNG whose header claims width x height (no pixel data: opening it must not decode anything)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data += struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))  # empty pixel data
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def clip_ckpt(tmp_path_factory, fixture_prefix):
    """A converted checkpoint folder holding the fixture HunyuanCLIP (small)."""
    root = tmp_path_factory.mktemp("clip_ckpt")
    build_release(str(root / "release"), fixture_prefix, components=("hunyuan_clip",))
    components.convert_release(str(root / "release"), str(root / "ckpt"), components=["hunyuan_clip"])
    return root


# ------------------------------------------------------------------------------------------- sample.py
def test_sample_cli_bad_inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "not_a_checkpoint").mkdir()
    (tmp_path / "file").write_text("x")
    before = _files(tmp_path)
    tiny = ["sample.py", "--config=ti2v:tiny", f"--config.output_dir={tmp_path / 'out'}"]
    cases = [
        (tiny[:2] + ["--config.output_dir=/proc/1/stepvideo-out"], 1, "is not writable"),
        (tiny[:2] + [f"--config.output_dir={tmp_path / 'file' / 'out'}"], 1, "is a file, not a folder"),
        (tiny + ["--config.prompt=caf\udce9"], 1, "prompt is not valid UTF-8"),
        (tiny + [f"--config.image={folder}"], 1, "is a folder"),
        (tiny + [f"--config.image={tmp_path / 'small.png'}", "--config.max_image_pixels=100"], 1, "over the limit"),
        (tiny + ["--config.motion_score=nan"], 1, "motion_score must be a finite number >= 0"),
        (tiny + ["--config.promt=x"], 2, "unknown config field 'promt'"),
        (
            [
                "sample.py",
                "--config=ti2v",
                "--config.image=synthetic",
                f"--config.output_dir={tmp_path / 'out'}",
                f"--config.checkpoint_dir={tmp_path / 'not_a_checkpoint'}",
            ],
            1,
            "manifest.json: not found",
        ),
    ]
    _run_cases("stepvideo_jax.tools.sample", cases)
    # Only the last case gets as far as probing (and so creating) the output folder: it stays empty.
    assert _files(tmp_path) == sorted(before + ["out"])


def test_sampling_settings_bad_inputs(tmp_path, caplog):
    cfg = get_config("ti2v:tiny")
    cfg.output_dir = str(tmp_path / "out")
    _png_header(tmp_path / "huge.png", 20000, 20000)
    for field, value, fragment in [
        ("prompt", "caf\udce9", "prompt is not valid UTF-8"),
        ("image", str(tmp_path / "huge.png"), "400,000,000 pixels, over the limit of 100,000,000"),
        ("image", str(tmp_path), "is a folder"),
    ]:
        bad = cfg.copy_and_resolve_references()
        bad[field] = value
        with pytest.raises(ValueError, match=fragment):
            SampleSettings.from_config(bad)
    cfg.motion_score = 250.0
    caplog.set_level("WARNING")
    SampleSettings.from_config(cfg)
    assert any("motion_score 250 is far above" in r.getMessage() for r in caplog.records)
    assert os.listdir(tmp_path) == ["huge.png"]  # nothing created


# ------------------------------------------------------------------------------------------ checkpoints
def _damage(ckpt, how):
    manifest_file = ckpt / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    entry = manifest["components"]["hunyuan_clip"]
    params = ckpt / "hunyuan_clip" / "params"
    arrays = [os.path.join(r, n) for r, _, fs in os.walk(params) for n in fs if "d" in r.split(os.sep)[-1:]]
    if how == "no config":
        del entry["config"]
    elif how == "null component":
        manifest["components"]["hunyuan_clip"] = None
    elif how == "negative size":
        entry["bytes"] = -5
    elif how == "no manifest":
        manifest_file.unlink()
        return
    elif how == "no params folder":
        shutil.rmtree(params)
        return
    elif how == "random bytes":
        manifest_file.write_bytes(np.random.default_rng(0).bytes(200))
        return
    elif how in ("truncated array", "missing array"):
        assert arrays, _files(params)
        big = max(arrays, key=os.path.getsize)
        if how == "missing array":
            os.remove(big)
        else:
            with open(big, "r+b") as f:
                f.truncate(os.path.getsize(big) // 3)
        return
    manifest_file.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "how, fragment",
    [
        ("no config", "manifest entry has no valid 'config'"),
        ("null component", "manifest entry is None, not an object"),
        ("negative size", "manifest field 'bytes' must be an integer >= 0; got -5"),
        ("no manifest", "manifest.json: not found"),
        ("no params folder", "parameter folder"),
        ("random bytes", "manifest.json: not valid JSON"),
        ("truncated array", "array data unreadable"),
        ("missing array", "unreadable"),
    ],
)
def test_damaged_checkpoint_is_one_line_naming_folder_component_and_fix(clip_ckpt, tmp_path, how, fragment):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(clip_ckpt / "ckpt", ckpt)
    _damage(ckpt, how)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        components.restore_component(str(ckpt), "hunyuan_clip")
    message = str(info.value)
    assert fragment in message and "\n" not in message and str(ckpt) in message, message
    if how not in ("no manifest", "random bytes"):  # those name the file; the rest the component and the fix
        assert "component 'hunyuan_clip'" in message and "convert it again" in message, message


# ------------------------------------------------------------------------------------------- converter
def _release_with(tmp_path, fixture_prefix, edit_tensors=None, edit_config=None):
    src = tmp_path / "release"
    build_release(str(src), fixture_prefix, components=("hunyuan_clip",))
    if edit_tensors:
        tensors = load_file(str(src / CLIP_WEIGHTS))
        edit_tensors(tensors)
        save_file(tensors, str(src / CLIP_WEIGHTS))
    if edit_config:
        config = json.loads((src / CLIP_CONFIG).read_text())
        edit_config(config)
        (src / CLIP_CONFIG).write_text(json.dumps(config))
    return src


def _first_weight(tensors):
    return next(k for k in sorted(tensors) if k.endswith("weight") and tensors[k].ndim == 2)


def _as_int(t):
    k = _first_weight(t)
    t[k] = (t[k] * 1000).astype(np.int32)


def _nan(t):
    k = _first_weight(t)
    t[k] = t[k].copy()
    t[k][0, :3] = np.nan


@pytest.mark.parametrize(
    "edit_tensors, edit_config, fragment",
    [
        (_as_int, None, "stored as int32, but parameter"),
        (_nan, None, "3 of"),
        (
            None,
            lambda c: c.update(num_hidden_layers="two"),
            "config.json: field 'num_hidden_layers' has a bad value 'two'",
        ),
        (None, lambda c: c.pop("num_hidden_layers"), "config.json: required field(s) num_hidden_layers missing"),
    ],
)
def test_converter_refuses_bad_sources(tmp_path, fixture_prefix, edit_tensors, edit_config, fragment):
    src = _release_with(tmp_path, fixture_prefix, edit_tensors, edit_config)
    with pytest.raises(ConversionError) as info:
        components.convert_release(str(src), str(tmp_path / "ckpt"), components=["hunyuan_clip"])
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["release"]  # no destination, no staging folder


# ------------------------------------------------------------------------------------ training manifest
@pytest.mark.parametrize("score", ["NaN", "-1", "Infinity", "true"])
def test_training_manifest_motion_score_must_be_finite_and_non_negative(tmp_path, score):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"video": "a.mp4", "caption": "x", "motion_score": 1}\n'
        f'{{"video": "b.mp4", "caption": "y", "motion_score": {score}}}\n'
    )
    with pytest.raises(ValueError, match=r"m\.jsonl:2: motion_score must be a finite number >= 0"):
        read_training_manifest(manifest)


# -------------------------------------------------------------------------------- train.py and others
def test_train_and_tool_cli_bad_inputs(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.jsonl").write_text('{"video": "a.mp4"}\nnot json\n')
    (tmp_path / "videos").mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY\x01\x00")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "first.png")
    for name in ("empty.mp4", "trunc.npy"):
        row = {"video": name, "image": "first.png", "motion_score": 2, "caption": "x"}
        (tmp_path / f"index_{name}.jsonl").write_text(json.dumps(row) + "\n")
    before = _files(tmp_path)
    train = ["train.py", "--config=train_ti2v:tiny", "--config.data.kind=latents"]
    run = f"--workdir={tmp_path / 'run'}"
    _run_cases(
        "stepvideo_jax.tools.train",
        [
            (train + [f"--workdir={tmp_path / 'file'}"], 1, "is a file, not a folder"),
            (train + ["--workdir=/proc/1/run"], 1, "is not writable"),
            (train + [run, "--config.trian.steps=3"], 2, "unknown config field"),
            (
                train + [run, "--config.optim.warmup_steps=10", "--config.optim.total_steps=5"],
                1,
                "need 0 <= warmup_steps <= total_steps",
            ),
            (train + [run, f"--config.data.manifest={tmp_path / 'empty.jsonl'}"], 1, "has no items"),
            (train + [run, f"--config.data.manifest={tmp_path / 'bad.jsonl'}"], 1, "bad.jsonl:"),
            (train + [run, f"--config.data.manifest={tmp_path / 'missing.jsonl'}"], 1, "missing.jsonl"),
        ],
    )
    assert os.listdir(tmp_path / "run") == []  # the workdir probe creates the folder, and nothing in it
    shutil.rmtree(tmp_path / "run")
    _run_cases(
        "stepvideo_jax.tools.evaluate",
        [
            (
                ["evaluate", f"--videos={tmp_path / f'index_{name}.jsonl'}", f"--out={tmp_path / 'eval'}"],
                1,
                "is not readable",
            )
            for name in ("empty.mp4", "trunc.npy")
        ],
    )
    assert os.listdir(tmp_path / "eval") == []
    shutil.rmtree(tmp_path / "eval")
    pre = ["precompute", f"--out={tmp_path / 'lat'}", f"--checkpoint={tmp_path / 'nockpt'}"]
    _run_cases(
        "stepvideo_jax.tools.precompute",
        [
            (pre + [f"--manifest={tmp_path / 'missing.jsonl'}"], 1, "does not exist"),
            (pre + [f"--manifest={tmp_path / 'bad.jsonl'}"], 1, "bad.jsonl:2: not valid JSON"),
            (pre + [f"--manifest={tmp_path / 'empty.jsonl'}", f"--out={tmp_path / 'file'}"], 1, "is not usable"),
            (pre + [f"--manifest={tmp_path / 'empty.jsonl'}"], 1, "checkpoint folder"),
        ],
    )
    assert os.listdir(tmp_path / "lat") == []
    shutil.rmtree(tmp_path / "lat")
    _run_cases(
        "stepvideo_jax.tools.motion_scores",
        [
            (
                ["motion_scores", str(tmp_path / "videos"), f"--manifest={tmp_path / 'bad.jsonl'}"],
                1,
                f"{tmp_path / 'bad.jsonl'}:2: not valid JSON",
            ),
            (["motion_scores", str(tmp_path / "nowhere"), f"--manifest={tmp_path / 'm.jsonl'}"], 1, "does not exist"),
        ],
    )
    assert _files(tmp_path) == before


def test_parity_malformed_fixture_config_exits_2(tmp_path, fixture_prefix, capsys):
    from stepvideo_jax.tools import parity

    src = fixture_prefix("hunyuan_clip")
    for suffix in (".json", ".io.safetensors", ".weights.safetensors"):
        shutil.copy(src + suffix, tmp_path / f"clip{suffix}")
    meta = json.loads((tmp_path / "clip.json").read_text())
    meta["config"]["num_hidden_layers"] = "two"
    (tmp_path / "clip.json").write_text(json.dumps(meta))
    assert parity.check_prefixes([str(tmp_path / "clip")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "clip.json: malformed fixture config" in err and "\n" not in err, err
