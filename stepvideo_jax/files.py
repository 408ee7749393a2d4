"""Writing files atomically and reading JSON Lines: the one way the package does both.

Every file is written under a temporary name in its destination folder, flushed and fsynced, then
renamed into place, so a reader sees either the previous file or the complete new one, never a part;
if writing raises, the temporary file is removed and the previous file is left as it was. The
temporary file is created with mode 0o666 and the process umask applied by the kernel, so the final
file has the mode a plain ``open(path, "w")`` would give (0644 under umask 022), not the 0600 of
``tempfile.mkstemp``.

``atomic_path`` is the helper itself, for writers that want a path (``np.save``, ``cv2.imwrite``,
ffmpeg, safetensors); the temporary name keeps the destination's extension, which such writers read
to choose a format. ``atomic_write`` yields an open file object; ``write_*_atomic`` write a whole
value. ``read_jsonl`` / ``iter_jsonl`` read one JSON object per line, blank lines skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "write_jsonl_atomic",
    "iter_jsonl",
    "read_jsonl",
    "process_alive",
]

_TEMP_TRIES = 100


def _create_temp_beside(path: str) -> str:
    """Creates an empty hidden file `.NAME.pidPID.RANDOM.tmpEXT` in `path`'s folder; returns its path.
    The pid lets a later run remove what a killed process left (`video_io.remove_stale_temp_files`)."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    for _ in range(_TEMP_TRIES):
        tmp = os.path.join(folder, f".{stem}.pid{os.getpid()}.{secrets.token_hex(4)}.tmp{ext}")
        try:
            # 0o666: the kernel applies the umask, as for open(path, "w").
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path!r} after {_TEMP_TRIES} tries")


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path` (same extension) for the caller to write; when the block
    ends without an exception the file is fsynced and renamed to `path`, otherwise it is removed."""
    path = os.fspath(path)
    tmp = _create_temp_beside(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO]:
    """Yields a file object opened with `mode` ("w" or "wb") on a temporary file that replaces `path`
    when the block ends without an exception. Text is UTF-8 by default and written as given (no
    newline translation)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb'; got {mode!r}")
    text = mode == "w"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=(encoding or "utf-8") if text else None, newline="" if text else None) as f:
            yield f


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> str:
    """Writes `data` to `path` atomically; returns the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> str:
    """Writes `text` (as given, no newline translation) to `path` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, value: Any, **dumps_kwargs) -> str:
    """Writes `json.dumps(value, **dumps_kwargs)` plus a newline to `path` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(value, **dumps_kwargs) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any], *, ensure_ascii: bool = False) -> str:
    """Writes one JSON value per line (JSON Lines) to `path` atomically; returns the path."""
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=ensure_ascii) + "\n" for row in rows))


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line of a JSON Lines file. A line that is not
    valid JSON or not a JSON object raises ValueError naming the file and the line."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(item, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line; got {line.strip()[:80]!r}")
            yield lineno, item


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file in order, blank lines skipped (errors as `iter_jsonl`)."""
    return [item for _, item in iter_jsonl(path)]


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (ours, or someone else's): a temp file it owns is not stale."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
