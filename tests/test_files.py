"""The atomic-write helper and the JSON Lines reader."""

import json
import os
import re
import stat

import numpy as np
import pytest

from stepvideo_jax.files import (
    atomic_path,
    atomic_write,
    iter_jsonl,
    read_jsonl,
    write_bytes_atomic,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask():
    """Sets a umask for the test and restores the previous one."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_final_mode_follows_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_text_atomic(tmp_path / "a.txt", "x\n")
    with atomic_path(tmp_path / "b.npy") as tmp:
        np.save(tmp, np.arange(3))
    with open(tmp_path / "plain.txt", "w") as f:  # what a plain open gives under the same umask
        f.write("x\n")
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.npy") == _mode(tmp_path / "plain.txt") == 0o666 & ~mask
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.npy", "plain.txt"]


def test_failing_write_keeps_previous_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"v": 1}, indent=2)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target, "w") as f:
            f.write('{"v": 2, "half": ')
            raise RuntimeError("disk full")
    assert target.read_bytes() == before and json.loads(before) == {"v": 1}
    with pytest.raises(OSError, match="no space left"):
        with atomic_path(tmp_path / "clip.npy") as tmp:
            np.save(tmp, np.zeros(4))
            raise OSError("no space left on device")
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_writers_write_what_they_are_given(tmp_path):
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_text_atomic(tmp_path / "t.csv", "a,b\r\nc\n")  # as given: no newline translation
    write_jsonl_atomic(tmp_path / "m.jsonl", [{"caption": "café"}, {"x": 1}])
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\nc\n"
    assert (tmp_path / "m.jsonl").read_text(encoding="utf-8") == '{"caption": "café"}\n{"x": 1}\n'
    assert read_jsonl(tmp_path / "m.jsonl") == [{"caption": "café"}, {"x": 1}]
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_write(tmp_path / "a.txt", "a"):
            pass


def test_temp_keeps_the_extension_and_lives_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "clip.npz") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".npz")
        assert os.path.basename(tmp).startswith(".clip.")
        np.savez(tmp, a=np.ones(2))  # np.savez would append .npz to a name without it
    assert os.listdir(tmp_path) == ["clip.npz"]


def test_jsonl_errors_name_the_file_and_the_line(tmp_path):
    path = tmp_path / "index.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"b": 2})]
    path.write_text('{"a": 1}\n\n{"b": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:3: not valid JSON .*one JSON object per line$"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    expected = rf"^{re.escape(str(path))}:2: expected a JSON object per line; got '\[1, 2\]'$"
    with pytest.raises(ValueError, match=expected):
        read_jsonl(path)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_video_writers_final_mode_follows_the_umask(tmp_path, umask, mask):
    """write_mp4 goes through ffmpeg and write_png through PIL, both onto the helper's temporary file."""
    from stepvideo_jax.video_io import write_mp4, write_png

    umask(mask)
    frames = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    write_mp4(str(tmp_path / "v.mp4"), frames)
    write_png(str(tmp_path / "v.png"), frames[0])
    assert _mode(tmp_path / "v.mp4") == _mode(tmp_path / "v.png") == 0o666 & ~mask
    assert sorted(os.listdir(tmp_path)) == ["v.mp4", "v.png"]
