"""Converts a released Step-Video checkpoint folder into Orbax checkpoints, once
(`convert_torch_weights.py`, console script `stepvideo-convert`).

    stepvideo-convert --src=stepvideo-ti2v --dst=ckpt/ti2v \\
        [--components=transformer,vae,step_llm,hunyuan_clip] [--dtype=bfloat16|float32] [--overwrite]

Writes one Orbax checkpoint per component, `manifest.json` (configs, dtypes, source files with sizes
and SHA-256, converter version) and the tokenizer files; `sample.py` / `train.py` restore from it.
"""

from __future__ import annotations

import sys

from absl import app, flags

from stepvideo_jax.components import COMPONENTS, convert_release
from stepvideo_jax.convert.core import ConversionError
from stepvideo_jax.tools import cli

_SRC = flags.DEFINE_string("src", None, "Released checkpoint folder (transformer/, vae/, step_llm/, hunyuan_clip/).")
_DST = flags.DEFINE_string("dst", None, "Output folder (must not exist unless --overwrite).")
_COMPONENTS = flags.DEFINE_list("components", list(COMPONENTS), "Components to convert.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Parameter dtype written.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing destination.")
_QUANTIZE = flags.DEFINE_enum(
    "quantize",
    "none",
    ["none", "int8", "fp8"],
    "Weight-only quantization of the transformer's and Step-LLM's large linears (per-output-channel scales); "
    "the VAE and CLIP stay in --dtype.",
)
flags.mark_flags_as_required(["src", "dst"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.raise_interrupt_on_sigterm()  # a SIGTERM removes the staging folder like Ctrl-C
    try:
        manifest = convert_release(
            _SRC.value,
            _DST.value,
            components=_COMPONENTS.value,
            dtype=_DTYPE.value,
            overwrite=_OVERWRITE.value,
            quantize=_QUANTIZE.value,
            log=lambda s: print(s, flush=True),
        )
    except (ConversionError, FileExistsError, ValueError) as e:  # the CLI boundary: one line, exit 1
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(
            f"error: interrupted ({e or 'SIGINT'}); {_DST.value} left as it was, staging folder removed",
            file=sys.stderr,
        )
        return 130 if str(e or "SIGINT") == "SIGINT" else 143
    total = sum(c["bytes"] for c in manifest["components"].values())
    print(f"wrote {_DST.value}: {', '.join(manifest['components'])} ({total / 2**30:.2f} GiB)")
    return 0


def run_main() -> None:
    """Console-script entry point."""
    sys.exit(app.run(main))


if __name__ == "__main__":
    run_main()
