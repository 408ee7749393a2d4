"""Generate a video with Step-Video-TI2V (or T2V) in JAX.

    python sample.py --config=configs/demo.py                            # the shipped demo model (synthetic shapes)
    python sample.py --config=configs/ti2v.py:tiny                       # tiny random-weight models
    python sample.py --config=configs/ti2v.py --config.checkpoint_dir=checkpoints/stepvideo-ti2v \
        --config.image=first_frame.png --config.prompt="笑起来"           # the released 30B model

Every field of the config can be overridden with --config.FIELD=VALUE. Bad settings stop with a
one-line error before anything is loaded or written.
"""

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ti2v.py", "Sampling config (FILE or FILE:VARIANT).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax

    from stepvideo_jax import distributed
    from stepvideo_jax.diffusion.pipeline import run

    distributed.initialize()  # no-op unless on a multi-host TPU pod (or STEPVIDEO_DISTRIBUTED=1)

    if _CONFIG.value.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", _CONFIG.value.compilation_cache_dir)
    try:
        out = run(_CONFIG.value)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not distributed.is_main_process():
        return
    t = out["timings"]
    print(f"wrote {out['paths']['mp4']}")
    print(f"wrote {out['paths']['png']}")
    print("timings: " + ", ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.2f}" for k, v in t.items()))


if __name__ == "__main__":
    app.run(main)
