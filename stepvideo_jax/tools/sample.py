"""Generate a video with Step-Video-TI2V (or T2V) in JAX (`sample.py`, console script `stepvideo-sample`).

    stepvideo-sample --config=demo                                    # the shipped demo model (synthetic shapes)
    stepvideo-sample --config=ti2v:tiny                               # tiny random-weight models
    stepvideo-sample --config=ti2v --config.checkpoint_dir=checkpoints/stepvideo-ti2v \\
        --config.image=first_frame.png --config.prompt="笑起来"          # the released 30B model

Batch generation (model loaded and compiled once): `--config.prompts=FILE.jsonl`, one JSON object
per line (see `stepvideo_jax.tools.batch`). `--config.help` lists every field with its meaning.

`--config` takes a packaged config name (`ti2v`, `t2v`, `demo`, with `:VARIANT`), `configs/NAME.py`,
or a config file path. Every field can be overridden with --config.FIELD=VALUE. Bad settings stop
with a one-line error before anything is loaded or written.
"""

from __future__ import annotations

from absl import app
from ml_collections import config_flags

from stepvideo_jax import configs
from stepvideo_jax.tools import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.config_path("ti2v"), "Sampling config: NAME[:VARIANT] (ti2v, t2v, demo) or FILE[:ARG]."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax

    from stepvideo_jax import distributed
    from stepvideo_jax.diffusion.pipeline import run
    from stepvideo_jax.sharding import MeshConfig, make_mesh

    # No-op unless on a multi-host TPU pod or under a launcher (STEPVIDEO_DISTRIBUTED=1); every process
    # must run the same config, or all stop with one line.
    distributed.start(_CONFIG.value)

    if _CONFIG.value.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", _CONFIG.value.compilation_cache_dir)
    try:
        if _CONFIG.value.get("prompts"):
            from stepvideo_jax.tools import batch

            mesh = make_mesh(MeshConfig.parse(_CONFIG.value.mesh)) if _CONFIG.value.mesh else None
            summary = batch.run_batch(_CONFIG.value, mesh)
            return 1 if not summary["written"] else 0
        out = run(_CONFIG.value)
    except (ValueError, FileNotFoundError) as e:  # bad input or a damaged checkpoint: one line
        raise SystemExit(f"error: {e}") from None
    if not distributed.is_main_process():
        return
    t = out["timings"]
    print(f"wrote {out['paths']['mp4']}")
    print(f"wrote {out['paths']['png']}")
    print("timings: " + ", ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.2f}" for k, v in t.items()))


def run_main() -> None:
    """Console-script entry point."""
    cli.run(main)


if __name__ == "__main__":
    run_main()
