"""Calibrates the static step-cache policy: per-step residual magnitude ratios of the DiT block stack.

    python -m stepvideo_jax.tools.calibrate_cache --config=configs/demo.py \
        [--examples_dir=demo/examples] [--motion_scores=2,5,10]

Runs the uncached sampler of the config (its steps, CFG, time shift, seed) on the config's own prompt
and image, or on every ``<ID>.png`` + ``<ID>.txt`` of a flat folder at each motion score, records per
step MagCache's ratio mean ||r_t|| / ||r_{t-1}|| of the block stack's residual r (`Sampler.calibrate`),
averages the runs and prints the ``cache.mag_ratios`` tuple to put in the config (the static policy
resamples it to other step counts). Calibrate on prompts outside the evaluation set.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["calibrate"]


def _examples(folder: str) -> list[tuple[str, str]]:
    if not os.path.isdir(folder):
        raise ValueError(f"examples folder {folder!r} does not exist; expected <ID>.png + <ID>.txt files")
    out = []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in (".png", ".jpg", ".jpeg"):
            txt = os.path.join(folder, stem + ".txt")
            if not os.path.isfile(txt):
                raise ValueError(f"prompt file {txt!r} is missing for image {name!r}")
            with open(txt, encoding="utf-8") as f:
                out.append((os.path.join(folder, name), f.read().strip()))
    if not out:
        raise ValueError(f"examples folder {folder!r} has no .png/.jpg images with <ID>.txt prompts")
    return out


def calibrate(config, examples_dir: str = "", motion_scores=None) -> np.ndarray:
    """float64 [steps]: the mean magnitude ratios over the runs (module docstring)."""
    import jax
    import jax.numpy as jnp

    from stepvideo_jax.diffusion.flow_match import flow_sigmas
    from stepvideo_jax.diffusion.pipeline import (
        SampleSettings,
        VideoPipeline,
        latent_grid,
        prepare_image,
    )

    runs = _examples(examples_dir) if examples_dir else [(config.image, config.prompt)]
    scores = [config.motion_score] if not motion_scores else [float(s) for s in motion_scores]
    plans = []
    for image, prompt in runs:
        for s in scores:
            c = config.copy_and_resolve_references()
            c.image, c.prompt, c.motion_score = image, prompt, s
            plans.append(SampleSettings.from_config(c))
    from stepvideo_jax.components import load_components

    pipeline = VideoPipeline(*load_components(config))
    curves = []
    for st in plans:
        f, h, w = latent_grid(st.frames, st.height, st.width, pipeline.vae.cfg)
        noise_key, posterior_key = jax.random.split(jax.random.key(st.seed))
        text = pipeline.encode_text(st.prompt, st.positive_magic, st.negative_magic)
        condition = pipeline.encode_image(prepare_image(st), f, posterior_key) if st.ti2v else None
        noise = jax.random.normal(noise_key, (1, f, pipeline.dit.cfg.in_channels, h, w), jnp.float32)
        latents = jnp.transpose(noise, (0, 1, 3, 4, 2))  # [1, F', h, w, C] as the pipeline draws it
        sigmas = flow_sigmas(st.steps, st.time_shift)
        curves.append(pipeline.sampler.calibrate(latents, sigmas, text, condition, st.motion_score, st.cfg))
    return np.mean(np.stack(curves), axis=0)


_FLAGS = {}


def main(argv):
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    try:
        scores = [float(s) for s in f.motion_scores] if f.motion_scores else None
        ratios = calibrate(_FLAGS["config"].value, f.examples_dir, scores)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    text = ", ".join(f"{r:.4f}" for r in ratios)
    print(f"mag_ratios=({text})")
    if f.out:
        from stepvideo_jax.files import write_json_atomic

        write_json_atomic(f.out, {"steps": len(ratios), "mag_ratios": [round(float(r), 4) for r in ratios]}, indent=1)


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags

    _FLAGS["config"] = config_flags.DEFINE_config_file("config", None, "Sampling config (FILE or FILE:VARIANT).")
    flags.mark_flag_as_required("config")
    flags.DEFINE_string("examples_dir", "", "flat folder of <ID>.png + <ID>.txt (default: the config's prompt/image)")
    flags.DEFINE_list("motion_scores", [], "motion scores per example (default: the config's)")
    flags.DEFINE_string("out", "", "also write the ratios to this JSON file")
    from stepvideo_jax.tools import cli

    cli.run(main)
