"""Trained model -> checkpoint folder that `sample.py` and `TI2VPipeline.from_checkpoint` read.

    python -m stepvideo_jax.tools.export --config=demo:dit --workdir=runs/demo/dit \\
        --base=stepvideo_jax/demo/checkpoint --out=checkpoints/my-dit
    python sample.py --config=demo --config.checkpoint_dir=checkpoints/my-dit

`--config`/`--workdir` are the training run's (as given to train.py): its latest checkpoint's network
(the EMA weights when the run kept them, unless --noema) replaces that component ("transformer" for
a DiT run, "vae" for a VAE run) of the `--base` checkpoint folder, whose other components (and
tokenizers) are copied. The trained network must fit the base's others (the DiT's caption widths the
text encoders', its latent channels the VAE's); a mismatch stops with one line before anything is
written. Parameters are written in the base's dtype by default (a run trained in float32 over the
bfloat16 demo checkpoint comes out bfloat16, so the base's sampling config reads it);
`--param_dtype=float32` (or any dtype name) casts every parameter instead, `--param_dtype=keep` keeps
the trained dtype.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from absl import app, flags
from ml_collections import config_flags

from stepvideo_jax import components, configs
from stepvideo_jax.checkpoint import read_manifest
from stepvideo_jax.tools import cli

__all__ = ["export_components", "export_trained"]

_NETWORK_COMPONENT = {"dit": "transformer", "vae": "vae"}


def _check_fits(base: str, trained: dict) -> None:
    """One-line error when a trained network does not fit the base checkpoint's other components."""
    cfg = {name: components.component_config(base, name) for name in components.COMPONENTS}
    cfg.update({name: model.cfg for name, model in trained.items()})
    dit, vae = cfg["transformer"], cfg["vae"]
    widths = (cfg["step_llm"].hidden_size, cfg["hunyuan_clip"].hidden_size)
    if tuple(dit.caption_channels) != widths:
        raise ValueError(
            f"the DiT's caption_channels {tuple(dit.caption_channels)} do not match the text encoders' "
            f"widths {widths} in {base}; train with model.caption_channels={widths}"
        )
    if dit.in_channels != vae.z_channels:
        raise ValueError(
            f"the DiT's in_channels {dit.in_channels} do not match the VAE's z_channels "
            f"{vae.z_channels}; the DiT must be trained on this VAE's latents"
        )


def export_components(
    base: str, out: str, trained: dict, *, param_dtype: str | None = None, overwrite: bool = False, source: str = ""
) -> dict:
    """Writes `out`: the `trained` {component name: model} plus the other components of `base`."""
    components.check_checkpoint_dir(base)
    unknown = sorted(set(trained) - set(components.COMPONENTS))
    if unknown:
        raise ValueError(f"unknown components {unknown}; expected some of {', '.join(components.COMPONENTS)}")
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"{out}: exists; pass --overwrite to replace it")
    _check_fits(base, trained)
    manifest = read_manifest(base)
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name in components.COMPONENTS:
            if name in trained:
                models[name] = (trained[name], None)
                continue
            if name not in manifest["components"]:
                raise ValueError(f"{base}: has no {name!r} component to copy")
            tok = None
            if manifest["components"][name].get("tokenizer"):
                tok = os.path.join(tmp, name)
                shutil.copytree(components.tokenizer_dir(base, name), tok)
            models[name] = (components.restore_component(base, name), tok)
        return components.save_components(
            out,
            models,
            source=source or f"trained {sorted(trained)} + {base}",
            overwrite=overwrite,
            param_dtype=param_dtype or None,
        )


def export_trained(
    config,
    workdir: str,
    base: str,
    out: str,
    *,
    use_ema: bool = True,
    param_dtype: str | None = None,
    overwrite: bool = False,
) -> dict:
    """The latest checkpoint of training run `workdir` (config as given to train.py) exported over `base`."""
    from stepvideo_jax.training.loop import load_trained_model

    network = config.network
    if network not in _NETWORK_COMPONENT:
        raise ValueError(f"config.network must be one of {sorted(_NETWORK_COMPONENT)}; got {network!r}")
    components.check_checkpoint_dir(base)
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"{out}: exists; pass --overwrite to replace it")
    model = load_trained_model(config, workdir, use_ema=use_ema)
    return export_components(
        base,
        out,
        {_NETWORK_COMPONENT[network]: model},
        param_dtype=param_dtype,
        overwrite=overwrite,
        source=f"{network} trained in {workdir} + {base}",
    )


_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.config_path("train_ti2v"), "Training config of the run (as given to train.py)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "the training run's folder", required=True)
_BASE = flags.DEFINE_string("base", None, "checkpoint folder with the other components", required=True)
_OUT = flags.DEFINE_string("out", None, "checkpoint folder to write", required=True)
_EMA = flags.DEFINE_bool("ema", True, "export the EMA weights when the run kept them")
_DTYPE = flags.DEFINE_string(
    "param_dtype", "base", "dtype of the written parameters: 'base' (the base checkpoint's), 'keep', or a dtype name"
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace --out if it exists")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        param_dtype = _DTYPE.value
        if param_dtype == "base":
            components.check_checkpoint_dir(_BASE.value)
            network = _NETWORK_COMPONENT.get(_CONFIG.value.get("network", "dit"), "transformer")
            param_dtype = components.component_config(_BASE.value, network).param_dtype
        manifest = export_trained(
            _CONFIG.value,
            _WORKDIR.value,
            _BASE.value,
            _OUT.value,
            use_ema=_EMA.value,
            param_dtype=None if param_dtype == "keep" else param_dtype,
            overwrite=_OVERWRITE.value,
        )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {_OUT.value} ({', '.join(manifest['components'])})")
    print(f"sample it: python sample.py --config=demo --config.checkpoint_dir={_OUT.value}  (or a ti2v config)")


if __name__ == "__main__":
    cli.run(main)
