"""Trains the Step-Video-TI2V DiT.

    python train.py --config configs/train_ti2v.py:tiny --workdir /tmp/run
    python train.py --config configs/train_ti2v.py --workdir gs://bucket/run --config.data.manifest=...

Re-running with the same workdir resumes from its latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/train_ti2v.py", "training configuration file")
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder (checkpoints, TensorBoard events)", required=True)
_LOSSES_JSON = flags.DEFINE_string("losses_json", None, "write {step: loss} of this run's steps here (process 0)")


def _online_encoder(config):
    """VAE + text encoders from a converted checkpoint folder (for data.kind='video')."""

    def make(objective):
        from stepvideo_jax.checkpoint import restore_component
        from stepvideo_jax.text import PromptEncoder
        from stepvideo_jax.training.encode import ClipEncoder

        ckpt = config.online.checkpoint
        if not ckpt:
            raise ValueError("data.kind='video' needs --config.online.checkpoint (a converted checkpoint folder)")
        return ClipEncoder(restore_component(ckpt, "vae"), PromptEncoder.from_checkpoint(ckpt), objective)

    return make


def main(argv):
    del argv
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
        import json

        with open(_LOSSES_JSON.value, "w", encoding="utf-8") as f:  # full float precision, to compare runs
            json.dump({str(k): v for k, v in sorted(result.losses.items())}, f)


if __name__ == "__main__":
    app.run(main)
