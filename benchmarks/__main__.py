"""Runs every benchmark and rewrites BENCHMARKS.md.

    python -m benchmarks            (or: make bench)
    python -m benchmarks --only=dit_efficiency,compile_time     (re-runs those; keeps the other sections)

Each benchmark runs in its own process (clean memory, clean compile caches) as
`python -m benchmarks.NAME ARGS`; its stdout (Markdown tables and target lines) goes into the file under
a section with the exact command, after the machine description and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

from benchmarks.common import machine_description
from stepvideo_jax.files import write_text_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, args, title): `python -m benchmarks.NAME ARGS`, where a ":suffix" only tells two sections of one script apart
BENCHMARKS = [
    ("dit_efficiency", [], "DiT efficiency vs the machine's matmul peak"),
    ("compile_time", [], "Compile time: nnx.scan vs unrolled"),
    ("sampler", ["--steps=50"], "Sampling step time and host overhead (tiny config, 50 steps)"),
    ("memory_scaling", [], "Memory scaling with tokens"),
    ("attention_memory", [], "chunked vs xla self-attention memory"),
    (
        "vae",
        ["--config=real", "--frames=17", "--height=256", "--width=256", "--skip-memory"],
        "Video-VAE v2 encode / decode",
    ),
    ("vae:memory", ["--skip-timing"], "Video-VAE v2 decode memory at 544x992 (compiled)"),
    ("convert", [], "Checkpoint conversion: peak RSS and throughput"),
    ("projections", [], "Projected seconds per video (projections)"),
    ("quantization_error", [], "Weight-only int8 / fp8 quantization error at the released DiT width"),
    ("memory_residency", ["--only=demo"], "Peak RSS of sample.py: residency all vs sequential, bf16 vs int8 DiT"),
    ("batch", ["--config=demo", "--videos=8"], "Batch generation: 8 videos in one sample.py run vs 8 runs (demo)"),
    ("cache_policies", ["--limit=3"], "Step caching on the demo model"),
    ("tpu_plan_tables", [], "TPU compiler plans, deviceless (memory from the compiler; times are estimates)"),
]

# Sections measured on another machine (a lent GPU) or by a recipe too long for `make bench` (the demo LoRA
# recipe, ~1 h) and pasted in by hand: no run here produces them, so every regeneration, whole or `--only`,
# carries them over from the existing file unchanged, after the others.
RECORDED = [
    "GPU: cuDNN attention, bf16 DiT layer, VAE decode (benchmarks/device.py)",
    # needs a checkout of the official code and torch, neither of which this project installs
    "CPU forward vs the official PyTorch DiT",
    'LoRA on the demo model: teaching it the word "star"',
]


# What limits a target that a section may report as missed (kept beside the figures it explains).
NOTES = {
    "batch": (
        "Each separate run loads the four networks and compiles every program again (text encoders, VAE "
        "encode, the DiT step, VAE decode: most of a demo run on CPU); the batch run does that once and then "
        "only computes. Both sides ran back to back on the same shared machine, whose load varies between "
        "runs, so the ratio is indicative."
    ),
    "vae": (
        "The issue asks for seconds per frame at 256x256 and 544x992. 256x256 is timed above with the "
        "released widths. 544x992 is not timed on this 2-core, 24 GB VM: decoding one 17-frame chunk untiled "
        "needs 31.5 GiB of temporaries (next section), and with the spatial tiles that fit, one chunk "
        "would take tens of minutes, so the 544x992 seconds per frame are a pixel-ratio projection from the "
        "256x256 run, marked as such. On CPU the causal 3D convs run as per-temporal-tap 2D convs "
        "(`VAEConfig.conv_impl`), 2-8x faster than XLA:CPU's 3D conv with its gradients; both paths are "
        "checked equal in the tests."
    ),
    "dit_efficiency": (
        "On this shared VM the speed varies from run to run (the `jnp.dot` peak measured 105-159 GFLOP/s "
        "in three runs on the same day, and the fraction 0.78-0.85); both are measured in the same run, "
        "interleaved. What stays below the dot peak is the non-matmul work (LayerNorms, QK RMSNorm, RoPE, "
        "AdaLN modulation, softmax and tanh-GELU: the transcendental part alone is measured above) and the "
        "attention matmuls, whose 128-wide contraction runs below the square-dot rate on this CPU."
    ),
    "memory_residency": (
        "The demo model's weights are 8 MB, so its peaks are the JAX/XLA runtime and the compiled programs; "
        "the sequential peak is the largest stage instead of the sum, which matters at the released sizes "
        "(DiT 58.8 GB bf16 / 29.5 GB int8, Step-LLM 39.2 / 20.0 GB, exact parameter bytes from the models' "
        "shapes). `--only=released_width` runs the same rows with random bf16 weights at the released widths "
        "(2-layer DiT and Step-LLM, whole CLIP and VAE, ~7 GB checkpoint built under runs/)."
    ),
    "sampler": (
        "What limits it on this machine: one jitted call per step costs about 0.6-0.8 ms of host dispatch "
        "and XLA:CPU launch, on the same two cores that run the computation, against about 3 ms of compute "
        "for a tiny-config step, so nothing can hide it (on a TPU/GPU the next step's dispatch overlaps "
        "the device's work: `Sampler.sample` dispatches step i+1 before waiting for step i). The fused "
        "`lax.fori_loop` (`--config.fused_loop=True`) has no per-step host work. For the 30B model a step "
        "takes seconds, so the same ~1 ms is under 0.1%."
    ),
}


def _existing_sections(path: str) -> dict[str, str]:
    """{title: "## TITLE ..." text} of the file's known sections (generated and recorded), cut at the
    known "## TITLE" lines only, since a script's own output may contain "## " headings."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    titles = [title for _, _, title in BENCHMARKS] + RECORDED
    starts = sorted((text.find(f"\n## {t}\n"), t) for t in titles if f"\n## {t}\n" in text)
    old = {}
    for (start, title), nxt in zip(starts, starts[1:] + [(len(text), None)]):
        old[title] = text[start + 1 : nxt[0]].rstrip("\n") + "\n"
    return old


def _recorded_sections(path: str) -> list[str]:
    """The RECORDED sections the existing file has, in RECORDED order."""
    if not os.path.exists(path):
        return []
    old = _existing_sections(path)
    return [old[t] for t in RECORDED if t in old]


def _merge_sections(path: str, new_sections: list[str]) -> list[str]:
    """Every known benchmark's section, in BENCHMARKS order: the re-run ones from `new_sections`, the
    others as the existing file has them (sections are cut at the known "## TITLE" lines only, since
    a script's own output may contain "## " headings)."""
    old = _existing_sections(path)
    titles = [title for _, _, title in BENCHMARKS]
    fresh = {sec.split("\n", 1)[0].removeprefix("## "): sec for sec in new_sections}
    return [fresh.get(t) or old[t] for t in titles if t in fresh or t in old]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--output", default=os.path.join(REPO, "BENCHMARKS.md"))
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    unknown = only - {name for name, _, _ in BENCHMARKS}
    if unknown:
        print(f"error: unknown benchmark(s) {sorted(unknown)}; known: {[n for n, _, _ in BENCHMARKS]}", file=sys.stderr)
        return 2
    sections = []
    failed = []
    for name, extra, title in BENCHMARKS:
        if only and name not in only:
            continue
        module = name.split(":")[0]  # "vae:memory" runs benchmarks/vae.py with its own arguments
        cmd = [sys.executable, "-m", f"benchmarks.{module}", *extra]
        shown = " ".join(["python", "-m", f"benchmarks.{module}", *extra])
        print(f"== {shown}", flush=True)
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-3000:], file=sys.stderr)
            body = f"FAILED (exit {proc.returncode}); last lines of stderr:\n\n```\n{proc.stderr[-1500:]}\n```"
        else:
            body = proc.stdout.strip()
        note = f"\n\n{NOTES[name]}" if name in NOTES else ""
        sections.append(f"## {title}\n\n`{shown}`\n\n{body}{note}\n")
    header = (
        "# Benchmarks\n\n"
        f"Generated by `python -m benchmarks` on {datetime.date.today().isoformat()}.\n\n"
        f"Machine: {machine_description()}\n\n"
        "Every figure is a median over repeated runs after warm-up unless its section says otherwise; ratios "
        "are measured within one run. Projections are marked as such. Direction columns before 2026-12-02 used "
        "the evaluation's earlier rule (grey flow from the first to the last frame; the shipped demo model "
        "rescored with the current one: unchanged, 20/20). Demo-model rows measured before the evening of "
        "2026-12-02 are the first shipped model's (v1, dark backgrounds only); the v2-background model that "
        "replaced it is scored in the README's demo section, and rows measured on it say so.\n"
    )
    if only and os.path.exists(args.output):
        sections = _merge_sections(args.output, sections)
    sections += _recorded_sections(args.output)
    text = header + "\n" + "\n".join(sections)
    write_text_atomic(args.output, text)
    print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
