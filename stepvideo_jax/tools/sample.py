"""Generate a video with Step-Video-TI2V (or T2V) in JAX (`sample.py`, console script `stepvideo-sample`).

    stepvideo-sample --config=demo                                    # the shipped demo model (synthetic shapes)
    stepvideo-sample --config=ti2v:tiny                               # tiny random-weight models
    stepvideo-sample --config=ti2v --config.checkpoint_dir=checkpoints/stepvideo-ti2v \\
        --config.image=first_frame.png --config.prompt="笑起来"          # the released 30B model

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

    # No-op unless on a multi-host TPU pod or under a launcher (STEPVIDEO_DISTRIBUTED=1); every process
    # must run the same config, or all stop with one line.
    distributed.start(_CONFIG.value)

    if _CONFIG.value.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", _CONFIG.value.compilation_cache_dir)
    try:
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
