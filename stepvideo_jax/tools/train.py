"""Trains the Step-Video-TI2V DiT (or the VAE) (`train.py`, console script `stepvideo-train`).

    stepvideo-train --config=train_ti2v:tiny --workdir=/tmp/run
    stepvideo-train --config=train_ti2v --workdir=gs://bucket/run --config.data.manifest=...

Re-running with the same workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import sys

from absl import flags, logging
from ml_collections import config_flags

from stepvideo_jax import configs
from stepvideo_jax.files import write_json_atomic
from stepvideo_jax.tools import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.config_path("train_ti2v"), "Training config: NAME[:VARIANT] (train_ti2v, demo:dit, ...) or FILE."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder (checkpoints, TensorBoard events)", required=True)
_LOSSES_JSON = flags.DEFINE_string("losses_json", None, "write {step: loss} of this run's steps here (process 0)")


def _online_encoder(config):
    """VAE + text encoders from a converted checkpoint folder (for data.kind='video')."""

    def make(objective):
        from stepvideo_jax.components import prompt_encoder_from_checkpoint, restore_component
        from stepvideo_jax.training.encode import ClipEncoder

        ckpt = config.online.checkpoint
        if not ckpt:
            raise ValueError("data.kind='video' needs --config.online.checkpoint (a converted checkpoint folder)")
        return ClipEncoder(restore_component(ckpt, "vae"), prompt_encoder_from_checkpoint(ckpt), objective)

    return make


def main(argv):
    del argv
    try:
        result = _train()
    except (ValueError, FileNotFoundError, FloatingPointError) as e:  # bad input or a diverged run: one line
        raise SystemExit(f"error: {e}") from None
    if result.interrupted:
        print(
            f"error: interrupted ({result.interrupted}) at step {result.final_step}; checkpoint saved in "
            f"{_WORKDIR.value}; run the same command again to resume",
            file=sys.stderr,
        )
        sys.exit(130 if result.interrupted == "SIGINT" else 143)


def _train():
    from stepvideo_jax import video_io

    if "://" not in _WORKDIR.value:  # a local workdir is checked before anything is loaded
        video_io.check_writable_dir(_WORKDIR.value, "--workdir")
    import jax

    from stepvideo_jax import distributed
    from stepvideo_jax.training.loop import train

    # No-op unless on a multi-host TPU pod or under a launcher (STEPVIDEO_DISTRIBUTED=1); every process
    # must run the same config and workdir, or all stop with one line.
    distributed.start(_CONFIG.value, _WORKDIR.value)

    config = _CONFIG.value
    logging.info("devices: %s", jax.devices())
    result = train(config, _WORKDIR.value, make_encoder=_online_encoder(config))
    logging.info("finished at step %d; %s", result.final_step, result.data_summary)
    if _LOSSES_JSON.value and distributed.is_main_process():
        # full float precision, to compare runs
        write_json_atomic(_LOSSES_JSON.value, {str(k): v for k, v in sorted(result.losses.items())})
    return result


def run_main() -> None:
    """Console-script entry point."""
    cli.run(main)


if __name__ == "__main__":
    run_main()
