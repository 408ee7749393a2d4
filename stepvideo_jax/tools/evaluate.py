"""Image-to-video evaluation from the command line (the metrics and runs live in ``stepvideo_jax.evaluation``).

    # generate and score a Step-Video-TI2V-Eval style folder (DIR/<category>/<ID>.png|.jpg + <ID>.txt)
    python -m stepvideo_jax.tools.evaluate --config=configs/demo.py --bench_dir=DIR --out=OUT \
        [--motion_scores=2,5,10] [--seed=1234] [--limit=N]
    # score videos generated elsewhere (one JSON object per line, paths relative to the index file:
    # {"video": ".npy (uint8 [F,H,W,3]) or .mp4", "image": path, "motion_score": x, "caption": text, "id": opt})
    python -m stepvideo_jax.tools.evaluate --videos=INDEX.jsonl --out=OUT
    # the same prompts with the config as given and with changed sampler settings: speedup, DiT
    # evaluations, PSNR / SSIM of each video against its baseline twin (stepvideo_jax.tools.compare_sampling)
    python -m stepvideo_jax.tools.evaluate --config=configs/demo.py --bench_dir=DIR --out=OUT \
        --compare=cache.policy=auto [--compare=FIELD=VALUE ...]

Writes under OUT the videos (benchmark mode), ``results.csv``, ``results.md`` and ``summary.json``,
and prints the summary. The metrics are defined in ``stepvideo_jax.evaluation.metrics``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from stepvideo_jax.evaluation import BENCH_LAYOUT, evaluate_benchmark, evaluate_folder

__all__ = ["main"]

_FLAGS: dict[str, Any] = {}


def _define_flags() -> None:
    """Defined only when run as a program, so importing this module defines no global flags."""
    _FLAGS["config"] = config_flags.DEFINE_config_file("config", None, "Sampling config (FILE or FILE:VARIANT).")
    flags.DEFINE_string("bench_dir", None, f"benchmark folder: {BENCH_LAYOUT}")
    flags.DEFINE_string("videos", None, "JSONL index of already generated videos (instead of --bench_dir)")
    flags.DEFINE_string("out", None, "output folder", required=True)
    flags.DEFINE_list("motion_scores", ["2", "5", "10"], "requested motion scores per prompt")
    flags.DEFINE_integer("seed", None, "sampling seed for every video (default: the config's)")
    flags.DEFINE_integer("limit", None, "evaluate only the first N benchmark items")
    flags.DEFINE_multi_string(
        "compare",
        [],
        "FIELD=VALUE config override(s) of a second sampler setting to compare "
        "with the config as given (e.g. cache.policy=auto); needs --bench_dir",
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    if bool(f.bench_dir) == bool(f.videos):
        raise app.UsageError("give exactly one of --bench_dir (with --config) or --videos")
    if f.compare and not f.bench_dir:
        raise app.UsageError("--compare generates videos: it needs --bench_dir and --config")
    config = _FLAGS["config"].value
    try:
        if f.videos:
            summary = evaluate_folder(f.videos, f.out)
        else:
            if config is None:
                raise app.UsageError("--bench_dir needs --config=FILE[:VARIANT]")
            if config.get("compilation_cache_dir"):
                import jax

                jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
            try:
                scores = [float(s) for s in f.motion_scores]
            except ValueError:
                raise ValueError(f"--motion_scores must be comma-separated numbers; got {f.motion_scores}") from None
            if f.compare:
                from stepvideo_jax.tools.compare_sampling import compare_settings, comparison_markdown

                report = compare_settings(
                    config, f.bench_dir, f.out, {" ".join(f.compare): f.compare}, scores, seed=f.seed, limit=f.limit
                )
                print(comparison_markdown(report))
                print(f"wrote {os.path.join(f.out, 'comparison.md')}")
                return
            summary = evaluate_benchmark(config, f.bench_dir, f.out, scores, seed=f.seed, limit=f.limit)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(summary, indent=2))
    print(f"wrote {os.path.join(f.out, 'results.md')}")


if __name__ == "__main__":
    _define_flags()
    from stepvideo_jax.tools import cli

    cli.run(main)  # --config takes a packaged name (demo) or a file
