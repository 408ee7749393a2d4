"""Runs the same benchmark prompts with a baseline sampler setting and one or more other settings.

    python -m stepvideo_jax.tools.evaluate --config=configs/demo.py --bench_dir=DIR --out=OUT \
        --compare=cache.policy=auto [--compare=guidance_interval="(0.0, 0.6)"] [--limit=N]

Every video is generated with the config as given (the baseline) and with each candidate setting
(the config with `--config`-style overrides, e.g. ``cache.policy=auto``), from the same seed, image
and prompt, one after the other, so machine load drifts affect both alike. Per candidate it reports:

- ``dit_eval_ratio``: the baseline's total DiT evaluations (batch rows x steps computed by the full
  block stack) over the candidate's;
- ``denoise_speedup``: the baseline's total denoising wall time over the candidate's (every setting
  is compiled by an untimed warm-up video first);
- ``psnr_vs_baseline`` / ``ssim_vs_baseline``: each candidate video (uint8) against its baseline
  twin, PSNR over the whole video (capped at ``PSNR_MAX_DB``) and SSIM averaged over the frames,
  mean and min over the videos;
- the evaluation metrics (``evaluate.summarize``) of the baseline and of each candidate.

Writes OUT/comparison.json and OUT/comparison.md (and OUT/<setting>/results.csv|md, summary.json).
"""

from __future__ import annotations

import ast
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from stepvideo_jax import video_io
from stepvideo_jax.components import load_components
from stepvideo_jax.diffusion.pipeline import SampleSettings, VideoPipeline, prepare_image
from stepvideo_jax.evaluation import (
    PSNR_MAX_DB,
    evaluate_video,
    find_benchmark_items,
    image_to_uint8,
    write_reports,
)
from stepvideo_jax.files import write_text_atomic

__all__ = ["parse_overrides", "video_similarity", "compare_settings", "comparison_markdown", "BASELINE"]

BASELINE = "baseline"


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """["cache.policy=auto", "guidance_interval=(0.0, 0.6)"] -> {"cache.policy": "auto", ...}; values
    are Python literals where they parse as one, else strings."""
    out = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a sampler setting override must be FIELD=VALUE (e.g. cache.policy=auto); got {item!r}")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        out[key.strip()] = value
    return out


def _apply(config, overrides: dict[str, Any]):
    c = config.copy_and_resolve_references()
    for key, value in overrides.items():
        node = c
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node:
                raise ValueError(f"override {key!r}: the config has no field {p!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"override {key!r}: the config has no field {parts[-1]!r}")
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise ValueError(f"override {key}={value!r}: {e}") from None
    return c


def video_similarity(video: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(PSNR over the whole video in dB, capped at PSNR_MAX_DB; mean SSIM over frames) of uint8 [F, H, W, 3]."""
    from skimage.metrics import structural_similarity

    if video.shape != reference.shape or video.dtype != np.uint8 or reference.dtype != np.uint8:
        raise ValueError(
            f"videos must both be uint8 of one shape; got {video.dtype} {video.shape} and "
            f"{reference.dtype} {reference.shape}"
        )
    mse = float(np.mean((video.astype(np.float64) - reference.astype(np.float64)) ** 2))
    psnr = PSNR_MAX_DB if mse == 0 else min(10 * math.log10(255.0**2 / mse), PSNR_MAX_DB)
    ssim = float(
        np.mean([structural_similarity(r, v, data_range=255, channel_axis=-1) for v, r in zip(video, reference)])
    )
    return psnr, ssim


def compare_settings(
    config,
    bench_dir: str,
    out_dir: str,
    candidates: dict[str, Sequence[str]],
    motion_scores: Sequence[float] = (2, 5, 10),
    seed: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Generates every benchmark item at every motion score with the baseline config and with each
    candidate {name: ["FIELD=VALUE", ...]}; returns (and writes) the comparison (module docstring)."""
    if not candidates:
        raise ValueError("compare needs at least one candidate setting (FIELD=VALUE overrides)")
    if BASELINE in candidates:
        raise ValueError(f"{BASELINE!r} names the unmodified config; pick another candidate name")
    scores = [float(s) for s in motion_scores]
    if not scores or any(not math.isfinite(s) or s < 0 for s in scores) or len(set(scores)) != len(scores):
        raise ValueError(f"motion_scores must be distinct finite numbers >= 0; got {list(motion_scores)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    configs = {BASELINE: config.copy_and_resolve_references()}
    overrides = {name: parse_overrides(o) for name, o in candidates.items()}
    for name, o in overrides.items():
        configs[name] = _apply(config, o)
    items = find_benchmark_items(bench_dir)[:limit]
    out_dir = video_io.check_output_dir(out_dir)

    def settings_for(c, image_path: str, prompt: str, score: float) -> SampleSettings:
        c = c.copy_and_resolve_references()
        c.prompt, c.image, c.motion_score, c.output_dir, c.progress = prompt, image_path, score, out_dir, False
        if seed is not None:
            c.seed = int(seed)
        return SampleSettings.from_config(c)

    # Every setting of every video validated before anything is loaded.
    plans = [
        (item, {name: [settings_for(c, item[2], item[3], s) for s in scores] for name, c in configs.items()})
        for item in items
    ]
    first = plans[0][1][BASELINE][0]
    if not first.ti2v:
        raise ValueError("the comparison evaluates image-to-video configs (use_additional_conditions=True)")
    pipeline = VideoPipeline(*load_components(config))
    image0 = prepare_image(first)
    for name in configs:  # compile every setting's programs outside the timed runs
        pipeline(plans[0][1][name][0], image0)

    rows: dict[str, list[dict]] = {name: [] for name in configs}
    with tqdm(total=len(plans) * len(scores) * len(configs), desc="compare", unit="video") as bar:
        for (category, item_id, _, prompt), by_name in plans:
            prepared = prepare_image(by_name[BASELINE][0])
            image_u8 = image_to_uint8(prepared)
            for k in range(len(scores)):
                reference = None
                for name in configs:
                    settings = by_name[name][k]
                    t0 = time.perf_counter()
                    result = pipeline(settings, prepared)
                    wall = time.perf_counter() - t0
                    frames = video_io.to_uint8(result.video)
                    if name == BASELINE:
                        reference = frames
                    psnr, ssim = video_similarity(frames, reference)
                    rows[name].append(
                        {
                            "category": category,
                            "id": item_id,
                            "prompt": prompt,
                            **evaluate_video(frames, image_u8, settings.motion_score, prompt),
                            "video": "",
                            "denoise_s": result.timings["denoise_s"],
                            "dit_evals": result.timings["dit_evals"],
                            "video_s": wall,
                            "psnr_vs_baseline": psnr,
                            "ssim_vs_baseline": ssim,
                        }
                    )
                    bar.update(1)
    report: dict[str, Any] = {
        "bench_dir": os.path.abspath(bench_dir),
        "videos": len(rows[BASELINE]),
        "motion_scores": scores,
        "steps": first.steps,
        "settings": {},
    }
    base = rows[BASELINE]
    for name, rs in rows.items():
        summary = write_reports(os.path.join(out_dir, name), rs)
        entry = {
            "overrides": {k: repr(v) for k, v in overrides.get(name, {}).items()},
            "dit_evals": int(sum(r["dit_evals"] for r in rs)),
            "denoise_s": float(sum(r["denoise_s"] for r in rs)),
            "dit_eval_ratio": sum(r["dit_evals"] for r in base) / max(sum(r["dit_evals"] for r in rs), 1),
            "denoise_speedup": sum(r["denoise_s"] for r in base) / max(sum(r["denoise_s"] for r in rs), 1e-12),
            "psnr_vs_baseline_mean": float(np.mean([r["psnr_vs_baseline"] for r in rs])),
            "psnr_vs_baseline_min": float(min(r["psnr_vs_baseline"] for r in rs)),
            "ssim_vs_baseline_mean": float(np.mean([r["ssim_vs_baseline"] for r in rs])),
            "ssim_vs_baseline_min": float(min(r["ssim_vs_baseline"] for r in rs)),
            "eval": summary,
        }
        report["settings"][name] = entry
    write_text_atomic(os.path.join(out_dir, "comparison.json"), json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(os.path.join(out_dir, "comparison.md"), comparison_markdown(report))
    return report


def comparison_markdown(report: dict[str, Any]) -> str:
    """One table row per setting: evaluations, speedups, similarity to the baseline, evaluation targets."""
    lines = [
        f"Videos per setting: {report['videos']} "
        f"(motion scores {', '.join(f'{s:g}' for s in report['motion_scores'])}, "
        f"{report['steps']} steps).",
        "",
        "| setting | DiT evals | fewer evals | denoise s | denoise speedup | PSNR vs baseline (mean / min) | "
        "SSIM vs baseline | frame-0 PSNR | motion monotonic | direction |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["settings"].items():
        ev = e["eval"]
        label = name if not e["overrides"] else ", ".join(f"{k}={v}" for k, v in e["overrides"].items())
        mono = ev["motion_monotonic_fraction"]
        direc = ev["direction_accuracy"]
        psnr = (
            "identical"
            if e["psnr_vs_baseline_min"] >= PSNR_MAX_DB
            else f"{e['psnr_vs_baseline_mean']:.1f} / {e['psnr_vs_baseline_min']:.1f} dB"
        )
        lines.append(
            f"| {label} | {e['dit_evals']} | {e['dit_eval_ratio']:.2f}x | {e['denoise_s']:.2f} | "
            f"{e['denoise_speedup']:.2f}x | {psnr} | {e['ssim_vs_baseline_mean']:.3f} | {ev['psnr_mean']:.1f} dB | "
            f"{'' if mono is None else f'{100 * mono:.0f}%'} | {'' if direc is None else f'{100 * direc:.0f}%'} |"
        )
    return "\n".join(lines) + "\n"
