"""Markdown tables of the deviceless TPU plans (docs/scaling.md, BENCHMARKS.md) from the JSON reports of
``python -m stepvideo_jax.tools.plan --target=... --json=FILE``.

    python -m benchmarks.tpu_plan_tables            (every report in benchmarks/tpu_plans/)
    python -m benchmarks.tpu_plan_tables FILE.json ...

The reports in benchmarks/tpu_plans/ are written by the commands in docs/scaling.md (each takes
minutes of CPU: three TPU compiles of the 30B programs per part).

Every time figure in these reports is an ESTIMATE (TPU cost model + Pallas FLOPs at an assumed kernel
efficiency); memory and collectives are what the TPU compiler reports for the compiled programs.
"""

from __future__ import annotations

import glob
import json
import os
import sys

from benchmarks.common import md_table

GiB = 2**30
_ABBREV = {
    "all-gather": "AG",
    "reduce-scatter": "RS",
    "all-to-all": "A2A",
    "all-reduce": "AR",
    "collective-permute": "CP",
}


def _g(b) -> str:
    return "-" if b is None else f"{b / GiB:.2f}"


def _s(x) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}")


def _coll(c: dict) -> str:
    return ", ".join(f"{_ABBREV[k]} {v['count']} / {v['bytes'] / GiB:.1f}" for k, v in c.items()) or "none"


def _mesh(m: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in m.items() if v != 1) or "1 chip"


def _quantize(rep: dict, r: dict) -> str:
    # Reports written before the field existed: the file name carries the --quantize flag of its command.
    return r.get("quantize") or rep.get("quantize") or ("int8" if "int8" in rep.get("_file", "") else "none")


def _part_label(rep: dict, name: str, r: dict) -> str:
    q = _quantize(rep, r)
    if r.get("lora_rank"):
        return f"{name} (LoRA r{r['lora_rank']}, {'bf16' if q == 'none' else q} base)"
    return name if q == "none" or name not in ("sample", "llm") else f"{name} ({q})"


def _fits(r: dict) -> str:
    if "compile_error" in r:  # the TPU compiler refused the program: its buffers exceed HBM
        return f"**no**: the compiler needs {_g(r['temp_bytes'])} GiB of temporaries"
    return ("yes" if r["fits"] else "**no**") + f" ({_g(r['headroom_bytes'])})"


def part_rows(reports: list[dict]) -> str:
    rows = []
    for rep in reports:
        for name, r in rep.get("parts", {}).items():
            mfu = r.get("estimated_mfu")
            rows.append([
                f"`{r['target']}` ({r['devices']} chip{'s' if r['devices'] > 1 else ''})", f"`{_mesh(r['mesh'])}`", _part_label(rep, name, r),
                r["attention_kernel"],
                f"{_g(r['argument_bytes'])} / {_g(r['output_bytes'])} / {_g(r['temp_bytes'])}",
                f"**{_g(r['peak_bytes_per_device'])}** of {_g(r['hbm_bytes_per_device'])}",
                _fits(r),
                _coll(r["collectives"]), _s(r["estimated_step_seconds"]), _s(r["estimated_video_seconds"]),
                "-" if mfu is None else f"{mfu:.0%}",
            ])  # fmt: skip
    return md_table(
        ["target", "mesh", "part", "kernel", "args / out / temp GiB", "peak GiB per chip (HBM)", "fits (headroom GiB)",
         "collectives per step: count / GiB", "est. s/step", "est. s/video", "est. MFU"],
        rows,
    )  # fmt: skip


def _pipelines(reports: list[dict]) -> list[tuple[dict, str, dict]]:
    """One pipeline per (target, mesh, weight quantization), from the parts of every report that shares
    them (e.g. the sampling step in one report and the text encoders and VAE in another)."""
    from stepvideo_jax.tools.tpu_plan import pipeline_summary

    groups: dict = {}
    for rep in reports:
        for name, r in rep.get("parts", {}).items():
            if name == "train":
                continue
            q = _quantize(rep, r) if name in ("sample", "llm") else None
            key = (rep["target"], _mesh(rep["mesh"]))
            groups.setdefault(key, {}).setdefault(q, {})[name] = r
    out = []
    for (target, mesh), by_q in groups.items():
        for q, parts in by_q.items():
            if q is None:
                continue
            merged = {**by_q.get(None, {}), **parts}
            for other in ("sample", "llm"):  # the other quantized part, planned with the same weights
                if other not in merged and other in by_q.get(q, {}):
                    merged[other] = by_q[q][other]
            p = pipeline_summary(merged)
            if p:
                out.append(({"target": target, "q": q}, mesh, p))
    return out


def pipeline_rows(reports: list[dict]) -> str:
    rows = []
    for rep, mesh, p in _pipelines(reports):
        st = p["stages"]
        rows.append([
            f"`{rep['target']}`", f"`{mesh}`", "bf16" if rep["q"] == "none" else rep["q"],
            *[(f"{_s(st[k]['estimated_seconds'])} s / {_g(st[k]['peak_bytes_per_device'])} GiB" if k in st else "-")
              for k in ("llm", "clip", "sample", "vae")],
            _s(p["estimated_video_seconds"]), p["peak_stage"], "yes" if p["fits"] else "**no**",
        ])  # fmt: skip
    return md_table(
        ["target", "mesh", "DiT / Step-LLM weights", "Step-LLM (1 call)", "CLIP (1 call)", "DiT (50 steps)",
         "VAE decode (6 chunks)",
         "est. s/video", "peak stage", "all fit"],
        rows,
    )  # fmt: skip


def training_rows(reports: list[dict]) -> str:
    """Every training part: full training and LoRA / QLoRA side by side (what is trained, what state a chip holds)."""
    rows = []
    for rep in reports:
        r = rep.get("parts", {}).get("train")
        if r is None:
            continue
        q = _quantize(rep, r)
        base = "bf16" if q == "none" else q
        kind = f"LoRA r{r['lora_rank']}, {base} base frozen" if r.get("lora_rank") else "full (f32 master, AdamW, EMA)"
        trainable = r.get("trainable_params")
        rows.append([
            f"`{r['target']}` ({r['devices']} chips)", f"`{_mesh(r['mesh'])}`", kind,
            ("all" if not r.get("lora_rank") else "-") if trainable is None else f"{trainable / 1e6:,.1f} M",
            f"**{_g(r['peak_bytes_per_device'])}** of {_g(r['hbm_bytes_per_device'])}", _fits(r),
            _s(r["estimated_step_seconds"]),
        ])  # fmt: skip
    rows.sort(key=lambda row: (row[0], row[1], not row[2].startswith("full"), row[2]))
    return md_table(["target", "mesh", "training", "trainable params", "peak GiB per chip (HBM)", "fits (headroom GiB)",
                     "est. s/step"], rows)  # fmt: skip


def search_rows(rep: dict) -> str:
    rows = []
    # The tool's ranking (a stopped search's report keeps the rows in compile order): fitting meshes by time first.
    key = lambda r: (
        not r["fits"],
        (r["estimated_video_seconds"] or r["estimated_step_seconds"] or 0) if r["fits"] else 0,
    )
    for i, r in enumerate(sorted(rep["search"], key=key), 1):
        rows.append([
            i, f"`{r['mesh_spec']}`",
            _g(r["peak_bytes_per_device"]) if r["peak_bytes_per_device"] is not None
            else f"not compiled: weights alone {_g(r.get('weight_bytes_per_device'))}",
            "yes" if r["fits"] else "**no**",
            _coll(r["collectives"]), _s(r["estimated_step_seconds"]), _s(r["estimated_video_seconds"]),
        ])  # fmt: skip
    return md_table(["rank", "mesh", "peak GiB per chip", "fits", "collectives per step: count / GiB",
                     "est. s/step", "est. s/video"], rows)  # fmt: skip


def main(paths: list[str]) -> None:
    reports = []
    for p in paths:
        with open(p) as fh:
            reports.append(dict(json.load(fh), _file=os.path.basename(p)))
    print(
        "`python -m stepvideo_jax.tools.plan --target=TOPOLOGY ...` (commands in docs/scaling.md); reports: "
        + ", ".join(f"`{os.path.basename(p)}`" for p in paths)
        + "\n"
    )
    plans = [r for r in reports if "parts" in r]
    if plans:
        print("Per part, per chip (TPU compiler; times are ESTIMATES):\n")
        print(part_rows(plans))
        train = training_rows(plans)
        if train.count("\n") > 1:
            print("\nTraining the 30B, full and LoRA (batch 1 at 102 x 544 x 992, full remat; ESTIMATED times):\n")
            print(train)
        pipes = pipeline_rows(plans)
        if pipes.count("\n") > 1:
            print("\nWhole pipeline per video (ESTIMATES):\n")
            print(pipes)
    for r in reports:
        if "search" in r:
            kind = f" ({r['device_kind']})" if r.get("device_kind") else ""
            print(f"\nMesh search on `{r['target']}`{kind}, sampling step, ranked by estimated s/video:\n")
            print(search_rows(r))
            if not r.get("complete", True):
                print("\n(search stopped before every candidate was compiled: the rows above are the ones done)")


if __name__ == "__main__":
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tpu_plans", "*.json")
    main(sys.argv[1:] or sorted(glob.glob(here)))
