"""Step caching and guidance interval on the demo model: speedup vs similarity to the uncached videos.

    python -m stepvideo_jax.tools.demo_recipe --workdir=runs/demo --stages=heldout   # the 20 held-out prompts
    python -m benchmarks.cache_policies [--limit=20] [--settings=auto,static@0.1,...]

Generates the held-out prompts at motion scores 2, 5, 10 with the demo config uncached (the baseline)
and with each setting (`stepvideo_jax.tools.compare_sampling`), and prints one table: DiT
evaluations, denoising wall time (sum over the videos, every setting compiled first; settings run one
after another per video, so load drifts hit all alike), PSNR / SSIM of each video against its
uncached twin, and the evaluation metrics (frame-0 PSNR, motion monotonic, direction).

A setting is ``POLICY@THRESHOLD`` (first_block / static, max_skips and warm-up from the config),
``auto``, or ``cfg@LO-HI`` (guidance interval only), joined with ``+``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SETTINGS = (
    "first_block@0.05,first_block@0.1,first_block@0.2,static@0.05,static@0.1,static@0.2,static@0.3,cfg@0.0-0.6,auto"
)


def overrides_of(setting: str) -> list[str]:
    out = []
    for part in setting.split("+"):
        if part == "auto":
            out.append("cache.policy=auto")
        elif part.startswith("cfg@"):
            lo, hi = part[4:].split("-")
            out.append(f"guidance_interval=({float(lo)}, {float(hi)})")
        elif "@" in part:
            policy, threshold = part.split("@")
            if policy not in ("first_block", "static"):
                raise ValueError(f"unknown policy {policy!r} in setting {setting!r}")
            out += [f"cache.policy={policy}", f"cache.{policy}_threshold={float(threshold)}"]
        else:
            raise ValueError(f"setting parts are POLICY@THRESHOLD, auto or cfg@LO-HI; got {part!r}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="demo", help="a packaged config name (demo) or a config file")
    p.add_argument("--bench_dir", default=os.path.join(REPO, "runs", "demo", "data", "heldout"))
    p.add_argument("--out", default=os.path.join(REPO, "outputs", "bench", "cache_policies"))
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--settings", default=DEFAULT_SETTINGS)
    args = p.parse_args(argv)
    if not os.path.isdir(args.bench_dir):
        raise SystemExit(
            f"error: {args.bench_dir} does not exist; write it with "
            "python -m stepvideo_jax.tools.demo_recipe --workdir=runs/demo --stages=heldout"
        )
    from stepvideo_jax.configs import resolve_config_arg

    path = resolve_config_arg(args.config).partition(":")[0]
    spec = importlib.util.spec_from_file_location("_demo_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("")
    from stepvideo_jax.tools.compare_sampling import compare_settings, comparison_markdown

    candidates = {s: overrides_of(s) for s in args.settings.split(",") if s}
    report = compare_settings(config, args.bench_dir, args.out, candidates, (2, 5, 10), limit=args.limit)
    c = config.cache
    print(
        f"Demo model (`configs/demo.py`: {config.steps} steps, CFG {config.cfg:g}), held-out prompts "
        f"{f'(first {args.limit}) ' if args.limit else ''}x motion scores 2, 5, 10; caching warm-up "
        f"{c.warmup:g} of the steps, max_skips {c.max_skips}; `auto` = "
        f"{'static' if c.mag_ratios else 'first_block'} at its config threshold.\n"
    )
    print(comparison_markdown(report))
    auto = report["settings"].get("auto")
    if auto:
        ev = auto["eval"]
        print(
            f"auto: {auto['dit_eval_ratio']:.2f}x fewer DiT evaluations (target >= 1.6), "
            f"{auto['denoise_speedup']:.2f}x less denoising time (target >= 1.4), PSNR vs uncached "
            f"{auto['psnr_vs_baseline_mean']:.1f} dB (target >= 30), frame-0 PSNR {ev['psnr_mean']:.1f} dB "
            f"(target >= 28), motion monotonic {ev['motion_monotonic_fraction']:.0%} (>= 90%), "
            f"direction {ev['direction_accuracy']:.0%} (>= 80%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
