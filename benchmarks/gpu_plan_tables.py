"""GPU fit ESTIMATE for one 80 GB and one 48 GB card, per pipeline stage, from the plan tool's
simulated-CPU compiles of the release's programs on one device (no GPU compiler on this machine):

    python -m stepvideo_jax.tools.plan --devices=1 --mesh=fsdp=1 --noflops --parts=sample \\
        --json=benchmarks/gpu_plans/sample_bf16.json
    python -m stepvideo_jax.tools.plan --devices=1 --mesh=fsdp=1 --noflops --parts=sample,llm --quantize=int8 \\
        --json=benchmarks/gpu_plans/sample_llm_int8.json
    python -m stepvideo_jax.tools.plan --devices=1 --mesh=fsdp=1 --noflops --parts=llm,clip \\
        --json=benchmarks/gpu_plans/llm_clip_bf16.json
    python -m stepvideo_jax.tools.plan --devices=1 --mesh=fsdp=1 --noflops --parts=vae --frames=17 \\
        --json=benchmarks/gpu_plans/vae_chunk_bf16.json
    python -m benchmarks.gpu_plan_tables            # the tables in docs/scaling.md and BENCHMARKS.md

Weights = the compiled program's argument bytes (exact for the shapes and dtypes). Temporaries = what
XLA:CPU's buffer assignment needs; XLA:GPU's will differ. XLA:CPU runs bf16 dots in float32 and hoists
the conversion of the whole stacked [48, ...] bf16 weights out of the layer loop, so the bf16 DiT and
Step-LLM programs' CPU temporaries hold a float32 copy of every weight (twice the weight bytes), which a
GPU does not need; their temporaries here are taken from the int8 programs instead (the same programs
with the weights dequantized one layer at a time inside the loop, so activations plus one layer's
dequantized weights). The VAE stage is the decode of one 17-frame chunk (one device decodes the 6
chunks of a 102-frame video one after another).
"""

from __future__ import annotations

import json
import os
import sys

from benchmarks.common import md_table

GiB = 2**30
PLAN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_plans")
CARDS = (("80 GB", 80 * GiB), ("48 GB", 48 * GiB))  # nvidia-smi: 80 GiB (A100) / 79.6 (H100); 48 GiB cards
# stage -> (bf16 report file, part), (int8 report file, part) or None where the stage is not quantized
STAGES = {
    "Step-LLM encode (2 x 320 tokens)": (("llm_clip_bf16.json", "llm"), ("sample_llm_int8.json", "llm")),
    "HunyuanCLIP encode (2 x 77 tokens)": (("llm_clip_bf16.json", "clip"), None),
    "DiT sampling step (CFG 2, 102 x 544 x 992)": (("sample_bf16.json", "sample"), ("sample_llm_int8.json", "sample")),
    "VAE decode of one chunk (17 frames 544 x 992)": (("vae_chunk_bf16.json", "vae"), None),
}


def load_stages(plan_dir: str = PLAN_DIR) -> dict[str, dict[str, dict]]:
    """stage -> {"bf16": part report, "int8": part report} (int8 = bf16 for the unquantized stages)."""
    cache: dict[str, dict] = {}

    def part(ref):
        name, key = ref
        if name not in cache:
            with open(os.path.join(plan_dir, name)) as f:
                cache[name] = json.load(f)
        if key not in cache[name]:
            raise ValueError(f"{name} has no {key!r} part; rerun the command in this module's docstring")
        return cache[name][key]

    return {s: {"bf16": part(b), "int8": part(q or b)} for s, (b, q) in STAGES.items()}


def stage_estimates(stages: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per stage and dtype: weights, raw CPU temporaries, the temporaries used for the estimate, peak."""
    out: dict = {}
    for s, by in stages.items():
        out[s] = {}
        for q in ("bf16", "int8"):
            r = by[q]
            temp = by["int8"]["temp_bytes"]  # bf16 DiT / Step-LLM: the int8 program's (see the docstring)
            out[s][q] = dict(weights=r["argument_bytes"], cpu_temp=r["temp_bytes"], temp=temp,
                             peak=r["argument_bytes"] + r["output_bytes"] + temp)  # fmt: skip
    return out


def residency_peaks(est: dict[str, dict[str, dict]]) -> dict[tuple[str, str], int]:
    """(residency, dtype) -> estimated peak bytes of the whole run on one device. Sequential: the text
    encoders are resident together, then the DiT, then the VAE (the largest stage is the peak); all:
    every component's weights plus the largest stage's temporaries."""
    peaks = {}
    for q in ("bf16", "int8"):
        e = {s: v[q] for s, v in est.items()}
        text = [s for s in e if "encode" in s]
        text_peak = sum(e[s]["weights"] for s in text) + max(e[s]["peak"] - e[s]["weights"] for s in text)
        peaks[("sequential", q)] = max([text_peak] + [e[s]["peak"] for s in e if s not in text])
        weights = sum(v["weights"] for v in e.values())
        peaks[("all", q)] = weights + max(v["peak"] - v["weights"] for v in e.values())
    return peaks


def _g(b: float) -> str:
    return f"{b / GiB:.2f}"


def _fit(peak: int, cap: int) -> str:
    return f"yes ({_g(cap - peak)} free)" if peak <= cap else f"no ({_g(peak - cap)} over)"


def tables(plan_dir: str = PLAN_DIR) -> str:
    est = stage_estimates(load_stages(plan_dir))
    rows = []
    for s, v in est.items():
        b, q = v["bf16"], v["int8"]
        quantized = b["weights"] != q["weights"]
        rows.append([
            s, _g(b["weights"]), _g(q["weights"]) if quantized else "(not quantized)",
            _g(b["cpu_temp"]) + (f" / {_g(q['cpu_temp'])}" if quantized else ""), _g(b["temp"]),
            _g(b["peak"]), _g(q["peak"]) if quantized else _g(b["peak"]),
        ])  # fmt: skip
    head = ["stage (one device)", "weights bf16 GiB", "weights int8 GiB", "CPU temp GiB bf16 / int8 (raw)",
            "temp GiB used", "peak bf16 GiB", "peak int8 GiB"]  # fmt: skip
    peaks = residency_peaks(est)
    fit_rows = [
        [f"{q} {'all-resident' if r == 'all' else 'sequential'}", _g(p), *(_fit(p, cap) for _, cap in CARDS)]
        for (r, q), p in sorted(peaks.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    fit_head = ["option", "est. peak GiB", *(f"one {name} card" for name, _ in CARDS)]
    return md_table(head, rows) + "\n\n" + md_table(fit_head, fit_rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    print("ESTIMATE from the CPU compiler (XLA:GPU temporaries will differ; no GPU compiler here)\n")
    print(tables(argv[0] if argv else PLAN_DIR))


if __name__ == "__main__":
    main()
