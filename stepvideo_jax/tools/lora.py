"""LoRA adapter tools: merge an adapter into a full checkpoint, or export it in the release's key names.

    python -m stepvideo_jax.tools.lora merge --checkpoint=BASE --adapter=A.safetensors[,B...] \\
        [--scale=1.0[,0.5]] --out=DST          # a full checkpoint folder sample.py reads (other components copied)
    python -m stepvideo_jax.tools.lora export --adapter=A.safetensors --out=A_release.safetensors
                                               # diffusers/ComfyUI-style keys on the released DiT names

Adapters are written by `train.py` for a LoRA config (`--config=train_ti2v:lora`, `demo:lora`) as
WORKDIR/adapter.safetensors; `sample.py --config.lora=FILE --config.lora_scale=1.0` applies them too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from absl import app, flags

from stepvideo_jax.checkpoint import read_manifest
from stepvideo_jax.components import component_config, restore_component, save_components, tokenizer_dir
from stepvideo_jax.files import atomic_path
from stepvideo_jax.lora import apply_adapters, fingerprint_checkpoint, load_adapter, release_layout

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "merge: the base checkpoint folder")
_ADAPTER = flags.DEFINE_list("adapter", None, "adapter .safetensors file(s)")
_SCALE = flags.DEFINE_list("scale", ["1.0"], "merge: one scale, or one per adapter")
_OUT = flags.DEFINE_string("out", None, "merge: output checkpoint folder; export: output .safetensors file")


def merge(checkpoint: str, adapters: list[tuple[str, float]], out: str) -> dict:
    """Writes `checkpoint` with the adapters merged into its transformer as a new folder `out`."""
    base_fp = fingerprint_checkpoint(checkpoint)
    for path, _ in adapters:
        _, _, fp = load_adapter(path)
        if fp and fp != base_fp and not fp.startswith("random-"):
            print(f"warning: {path} was trained on base {fp}, not {checkpoint} ({base_fp})", file=sys.stderr)
    components = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in read_manifest(checkpoint)["components"].items():
            tok = None
            if entry.get("tokenizer"):
                tok = os.path.join(tmp, name)
                shutil.copytree(tokenizer_dir(checkpoint, name), tok)
            model = restore_component(checkpoint, name, config=component_config(checkpoint, name))
            if name == "transformer":
                apply_adapters(model, adapters)
            components[name] = (model, tok)
        return save_components(out, components, source=f"{checkpoint} + LoRA {[p for p, _ in adapters]}")


def export(adapter: str, out: str) -> int:
    from safetensors.numpy import save_file

    _, arrays, fp = load_adapter(adapter)
    tensors = release_layout(arrays)
    with atomic_path(out) as tmp:
        save_file(tensors, tmp, metadata={"base_fingerprint": fp, "layout": "stepvideo release keys, lora_A/lora_B"})
    return len(tensors)


def main(argv):
    if len(argv) != 2 or argv[1] not in ("merge", "export"):
        raise app.UsageError("expected one command: merge or export")
    if not _ADAPTER.value or not _OUT.value:
        raise app.UsageError("--adapter and --out are required")
    try:
        if argv[1] == "export":
            n = export(_ADAPTER.value[0], _OUT.value)
            print(f"wrote {_OUT.value}: {n} tensors")
            return 0
        if not _CHECKPOINT.value:
            raise app.UsageError("merge needs --checkpoint (the base checkpoint folder)")
        scales = [float(s) for s in _SCALE.value]
        scales = scales * len(_ADAPTER.value) if len(scales) == 1 else scales
        if len(scales) != len(_ADAPTER.value):
            raise app.UsageError(f"--scale has {len(scales)} values for {len(_ADAPTER.value)} adapters")
        merge(_CHECKPOINT.value, list(zip(_ADAPTER.value, scales)), _OUT.value)
        print(f"wrote {_OUT.value}")
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
