"""Generic checkpoint-folder I/O: the manifest, one Orbax parameter checkpoint per component, staging.

A converted checkpoint folder (written by `convert_torch_weights.py`) holds:

    manifest.json                 what was converted: per component its config, dtype, sources
    transformer/params/           one Orbax checkpoint per component (flat {"a.b.kernel": array})
    vae/params/
    step_llm/params/  step_llm/tokenizer/step1_chat_tokenizer.model
    hunyuan_clip/params/  hunyuan_clip/tokenizer/{vocab.txt, ...}

What a component *is* (config class, model, sharding rules) lives in `stepvideo_jax.components`,
whose `restore_component` builds the model abstractly, computes each parameter's target sharding and
calls `restore_params` here: Orbax reads straight into those shardings (each host reads only its own
shards; nothing is first materialised replicated or on the host).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from stepvideo_jax.config import dtype_from_name
from stepvideo_jax.files import process_alive, write_json_atomic

__all__ = [
    "CONVERTER_VERSION",
    "MANIFEST_NAME",
    "read_manifest",
    "write_manifest",
    "new_manifest",
    "manifest_component",
    "save_params",
    "stored_params",
    "restore_params",
    "read_params",
    "flat_values",
    "variable_value",
    "staged_folder",
]

CONVERTER_VERSION = "1"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "stepvideo-jax/orbax-components"


# ------------------------------------------------------------------------------------ manifest
def read_manifest(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    file = os.path.join(os.fspath(ckpt_dir), MANIFEST_NAME)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: not found (expected a folder written by convert_torch_weights.py)")
    with open(file, encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{file}: not valid JSON ({e})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or not isinstance(manifest.get("components"), dict)
    ):
        raise ValueError(f"{file}: not a stepvideo-jax manifest (expected format {MANIFEST_FORMAT!r} and 'components')")
    return manifest


def write_manifest(ckpt_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    write_json_atomic(os.path.join(os.fspath(ckpt_dir), MANIFEST_NAME), manifest, indent=1, sort_keys=True)


def manifest_component(manifest: Mapping[str, Any], ckpt_dir: str, name: str) -> Mapping[str, Any]:
    """The manifest entry of component `name`, or a one-line error naming the folder and what it has."""
    components = manifest["components"]
    if name not in components:
        raise ValueError(f"{ckpt_dir}: no component {name!r} in the manifest (has {', '.join(sorted(components))})")
    return components[name]


# ------------------------------------------------------------------------------------ arrays
def _checkpointer():
    """An Orbax PyTree checkpointer that writes host arrays without copying them first (Orbax's
    default deep-copies every numpy array before its async write: a second copy of the component)
    and without compression (random-looking weights shrink ~20% but writing and every restore then
    pay zstd on the host)."""
    import orbax.checkpoint as ocp

    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
        (jax.Array, ocp.type_handlers.ArrayHandler()),
    )
    handler = ocp.PyTreeCheckpointHandler(use_compression=False, type_handler_registry=registry)
    return ocp.Checkpointer(handler)


def save_params(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes {"a.b.kernel": array} as one Orbax checkpoint at `path` (which must not exist yet)."""
    import orbax.checkpoint as ocp

    with _checkpointer() as ckptr:
        ckptr.save(os.path.abspath(os.fspath(path)), args=ocp.args.PyTreeSave(dict(arrays)))


def stored_params(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{"a.b.kernel": (shape, dtype)} of an Orbax parameter checkpoint, read from its metadata only."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: Orbax checkpoint folder not found")
    try:
        with _checkpointer() as ckptr:
            meta = ckptr.metadata(path)
        tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
        return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in tree.items()}
    except Exception as e:  # Orbax/TensorStore raise many types for damaged metadata: one line naming the folder
        raise ValueError(f"{path}: unreadable Orbax checkpoint metadata ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:300]


# ------------------------------------------------------------------------------------ restore
def variable_value(var):
    """The array (or abstract value) held by an nnx Variable, or `var` itself."""
    return var.get_value() if hasattr(var, "get_value") else var


def flat_values(params: nnx.State) -> dict[str, Any]:
    """{"a.b.kernel": array} of a parameter state (the key layout of the stored checkpoints)."""
    return {".".join(map(str, p)): variable_value(v) for p, v in nnx.to_flat_state(params)}


def read_params(path: str | os.PathLike, target: Mapping[str, jax.ShapeDtypeStruct], *, partial: bool = False) -> dict:
    """Reads `target`'s keys of the Orbax parameter checkpoint at `path` into `target`'s shardings
    (`partial`: `target` may name only some of the stored keys). No checks: see `restore_params`."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    restore_args = ocp.checkpoint_utils.construct_restore_args(dict(target))
    args = ocp.args.PyTreeRestore(item=dict(target), restore_args=restore_args, partial_restore=partial)
    try:
        with _checkpointer() as ckptr:
            return ckptr.restore(path, args=args)
    except Exception as e:  # truncated or missing array files surface as TensorStore errors of many types
        raise ValueError(f"{path}: array data unreadable ({_first_line(e)})") from None


def restore_params(
    path: str | os.PathLike,
    target: Mapping[str, jax.ShapeDtypeStruct],
    *,
    dtype_name: str,
    own_dtype: frozenset[str] | set[str] = frozenset(),
) -> dict:
    """Reads the Orbax parameter checkpoint at `path` straight into `target`'s shardings, after
    checking that it holds exactly `target`'s keys, shapes, and the manifest's dtype `dtype_name`
    (keys in `own_dtype`, e.g. int8 kernels and their float32 scales, must have `target`'s dtype)."""
    path = os.path.abspath(os.fspath(path))
    stored = stored_params(path)
    want_dtype = np.dtype(dtype_from_name(dtype_name))
    for key, value in target.items():
        if key not in stored:
            raise ValueError(f"{path}: parameter {key} is missing (the model for the manifest's config has it)")
        shape, sdtype = stored[key]
        if shape != tuple(value.shape):
            raise ValueError(
                f"{path}: parameter {key} is stored with shape {shape}, the manifest's config gives {tuple(value.shape)}"
            )
        if key in own_dtype:
            if sdtype != np.dtype(value.dtype):
                raise ValueError(
                    f"{path}: quantized parameter {key} is stored as {sdtype}, expected {np.dtype(value.dtype)}"
                )
        elif sdtype != want_dtype or np.dtype(value.dtype) != want_dtype:
            raise ValueError(
                f"{path}: parameter {key} is stored as {sdtype}, the manifest says {dtype_name} "
                f"(model dtype {np.dtype(value.dtype)})"
            )
    extra = sorted(set(stored) - set(target))
    if extra:
        raise ValueError(f"{path}: stored parameters the model does not have: {extra[:10]}")
    return read_params(path, target)


# ------------------------------------------------------------------------------------ export
def new_manifest(source: str) -> dict[str, Any]:
    """An empty manifest (components are added under "components")."""
    import datetime

    return {
        "format": MANIFEST_FORMAT,
        "converter_version": CONVERTER_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "components": {},
    }


def _recover_and_clean(dst: str) -> list[str]:
    """What a killed `staged_folder` left beside `dst`: a replaced destination is put back if the
    new one never arrived, then its `.NAME.tmp-PID-*` / `.NAME.old-PID-*` folders are removed
    (only those of processes that are gone). Returns what was done, one line each."""
    import re
    import shutil

    parent, base = os.path.dirname(dst), os.path.basename(dst)
    if not os.path.isdir(parent):
        return []
    pattern = re.compile(rf"^\.{re.escape(base)}\.(tmp|old)-(\d+)-")
    stale = []
    for name in sorted(os.listdir(parent)):
        m = pattern.match(name)
        if m and not process_alive(int(m.group(2))):
            stale.append((m.group(1), os.path.join(parent, name)))
    done = []
    for kind, path in stale:
        replaced = os.path.join(path, "replaced")
        if kind == "old" and os.path.exists(replaced) and not os.path.exists(dst):
            os.replace(replaced, dst)  # killed between the two renames: the old destination comes back
            done.append(f"{dst}: restored from {path} (a run was killed while replacing it)")
    for _, path in stale:
        shutil.rmtree(path, ignore_errors=True)
        done.append(f"{path}: removed (left by a killed run)")
    return done


def _make_temp_folder(parent: str, prefix: str) -> str:
    """A new folder `parent/prefix<random>` created with mode 0o777 minus the umask (0755 under umask 022),
    as `mkdir` would make the destination; `tempfile.mkdtemp`'s 0700 would stay on it after the rename."""
    import secrets

    while True:
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def staged_folder(dst: str | os.PathLike, *, overwrite: bool, log=lambda line: None):
    """Yields a temporary folder beside `dst`; when the block finishes it replaces `dst` (only with
    `overwrite` if `dst` exists); when the block raises it is removed and `dst` is left untouched.

    The temporary folders carry the process id (`.NAME.tmp-PID-*`, `.NAME.old-PID-*`): the next run
    for the same `dst` removes those of a killed run, and puts a replaced `dst` back if the run was
    killed between moving the old one aside and moving the new one in."""
    import shutil
    import tempfile

    dst = os.path.abspath(os.fspath(dst))
    for line in _recover_and_clean(dst):
        log(line)
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"{dst}: destination exists; pass overwrite to replace it")
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tag = f".{os.path.basename(dst)}"
    tmp = _make_temp_folder(parent, f"{tag}.tmp-{os.getpid()}-")
    try:
        yield tmp
        if os.path.exists(dst):
            # The old destination stays whole (moved aside) until the new one is in place.
            old = tempfile.mkdtemp(prefix=f"{tag}.old-{os.getpid()}-", dir=parent)
            os.replace(dst, os.path.join(old, "replaced"))
            try:
                os.replace(tmp, dst)
            except BaseException:
                os.replace(os.path.join(old, "replaced"), dst)
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # leave no partial destination, then re-raise
        raise
