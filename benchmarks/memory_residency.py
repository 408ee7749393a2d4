"""Peak host RSS of `sample.py`: component residency "all" vs "sequential", bf16 vs int8 DiT.

    python -m benchmarks.memory_residency                      # the demo model, then the released-width models
    python -m benchmarks.memory_residency --only=demo
    python -m benchmarks.memory_residency --only=released_width --steps=2

Each row is one `python sample.py ...` in its own process; its peak is that child's `ru_maxrss`
(`os.wait4`), which on this CPU machine includes every parameter and activation (CPU "device" memory
is host memory). The int8 rows quantize the bf16 checkpoint at restore (`--config.dit_quantize=int8`;
the released-width rows also `--config.text_quantize=int8`).

"released_width": random bf16 weights at the release's widths for the parts that fit this 24 GB
machine: the DiT at 6144 wide with 48 heads but `--layers` (default 1) of its 48 layers, the Step-LLM
at 6144 wide (65536 vocab) with as many of its 48 layers, the whole HunyuanCLIP and the whole
Video-VAE v2; a 17-frame 128x128 video (3 x 8 x 8 latents), the tiny tokenizers. The checkpoint
(5.0 GB at 1 layer, ~7 GB at 2) is built once under `runs/bench_released_width_L<layers>` (git-ignored)
and reused. With 2 layers the all-resident bf16 row was killed by the OOM killer at 13.2 GB RSS on the
shared 24 GB machine (XLA:CPU also holds a float32 copy of the bf16 weights for its dots).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from benchmarks.common import md_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASED_WIDTH_DIR = os.path.join(REPO, "runs", "bench_released_width")


def build_released_width_checkpoint(dst: str, layers: int = 1, seed: int = 0) -> None:
    """Random bf16 components at the released widths (DiT and Step-LLM with `layers` layers)."""
    from flax import nnx

    from stepvideo_jax.components import save_components
    from stepvideo_jax.dit import DiTConfig, StepVideoDiT
    from stepvideo_jax.testing import build_tiny_tokenizers, random_model
    from stepvideo_jax.text import ClipConfig, HunyuanCLIP, StepLLM, StepLLMConfig
    from stepvideo_jax.vae import VAEConfig, VideoVAE

    tok_dir = dst + ".tokenizers"
    spm_file, clip_vocab_dir = build_tiny_tokenizers(tok_dir)
    step_tok = os.path.join(tok_dir, "step_llm")
    os.makedirs(step_tok, exist_ok=True)
    shutil.copy(spm_file, os.path.join(step_tok, "step1_chat_tokenizer.model"))
    pdt = dict(param_dtype="bfloat16", dtype="bfloat16")
    components = {
        "transformer": (
            random_model(lambda: StepVideoDiT(DiTConfig(num_layers=layers, **pdt), rngs=nnx.Rngs(0)), seed),
            None,
        ),
        "step_llm": (
            random_model(lambda: StepLLM(StepLLMConfig(num_layers=layers, **pdt), rngs=nnx.Rngs(0)), seed + 1),
            step_tok,
        ),
        "hunyuan_clip": (
            random_model(lambda: HunyuanCLIP(ClipConfig(**pdt), rngs=nnx.Rngs(0)), seed + 2),
            clip_vocab_dir,
        ),
        "vae": (random_model(lambda: VideoVAE(VAEConfig.real(**pdt), rngs=nnx.Rngs(0)), seed + 3), None),
    }
    save_components(dst, components, source=f"random bf16 weights at the released widths, seed {seed}", overwrite=True)


def _peak_rss(cmd: list[str], log: str) -> tuple[int, float]:
    """(peak RSS bytes, seconds) of one child process; raises naming the log when it fails."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
        )
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (status {status}); see {log}")
    return usage.ru_maxrss * 1024, time.perf_counter() - t0


ALL_RUNS = (("all", ""), ("sequential", ""), ("all", "int8"), ("sequential", "int8"))


def _rows(name: str, base: list[str], out_dir: str, runs=ALL_RUNS, text_too: bool = False) -> list[list[object]]:
    """One row per (residency, quantization), each printed as it completes; `text_too` quantizes the
    Step-LLM's linears with the DiT's. The ratio column is against the (all, bf16) row."""
    rows, peaks = [], {}
    for residency, quant in runs:
        tag = f"{name.split()[0]}-{residency}-{quant or 'bf16'}"
        cmd = base + [f"--config.residency={residency}", f"--config.output_dir={out_dir}/{tag}"]
        if quant:
            cmd.append(f"--config.dit_quantize={quant}")
            if text_too:
                cmd.append(f"--config.text_quantize={quant}")
        peak, seconds = _peak_rss(cmd, os.path.join(out_dir, f"{tag}.log"))
        peaks[(residency, quant)] = peak
        weights = (quant + (" DiT + Step-LLM" if text_too else " DiT")) if quant else "bf16 (as converted)"
        rows.append([name, residency, weights, peak, f"{seconds:.0f}"])
        print(f"row: {rows[-1]} (load average {os.getloadavg()})", flush=True)
    for row in rows:
        ratio = row[3] / peaks[("all", "")] if ("all", "") in peaks else float("nan")
        row[3:4] = [f"{row[3] / 2**30:.2f}", f"{ratio:.2f}"]
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="demo,released_width")
    p.add_argument("--steps", type=int, default=2, help="denoising steps of the released-width runs")
    p.add_argument("--layers", type=int, default=1, help="DiT and Step-LLM layers of the released-width runs")
    p.add_argument(
        "--runs",
        default="sequential:bf16,sequential:int8,all:int8,all:bf16",
        help="released-width rows, RESIDENCY:WEIGHTS in order (residency all / sequential, weights bf16 / int8)",
    )
    p.add_argument("--out", default=os.path.join(REPO, "runs", "bench_memory"))
    args = p.parse_args(argv)
    runs = []
    for item in args.runs.split(","):
        residency, _, weights = item.partition(":")
        if residency not in ("all", "sequential") or weights not in ("bf16", "int8"):
            p.error(f"--runs item {item!r}: expected RESIDENCY:WEIGHTS with all|sequential and bf16|int8")
        runs.append((residency, "" if weights == "bf16" else weights))
    os.makedirs(args.out, exist_ok=True)
    py = [sys.executable, "sample.py", "--config.progress=False"]
    rows = []
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}", flush=True)
    if "demo" in args.only:
        rows += _rows("demo", py[:2] + ["--config=configs/demo.py"] + py[2:], args.out)
    if "released_width" in args.only:
        ckpt = f"{RELEASED_WIDTH_DIR}_L{args.layers}"
        if not os.path.isdir(ckpt):
            build_released_width_checkpoint(ckpt, layers=args.layers)
        base = (
            py[:2]
            + ["--config=configs/ti2v.py"]
            + py[2:]
            + [
                f"--config.checkpoint_dir={ckpt}",
                "--config.image=synthetic",
                "--config.frames=17",
                "--config.height=128",
                "--config.width=128",
                f"--config.steps={args.steps}",
                "--config.denoise_filter=False",
                "--config.crop_540p=False",
            ]
        )
        # Sequential rows first by default: each row is printed when done, so a row killed for memory
        # on this shared machine leaves the others.
        rows += _rows(f"released widths (DiT, Step-LLM {args.layers} layer(s))", base, args.out, runs, text_too=True)
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(md_table(["model", "residency", "weights", "peak RSS GiB", "vs all / bf16", "wall s"], rows))


if __name__ == "__main__":
    main()
