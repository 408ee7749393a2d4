"""The GPU path on one accelerator: attention kernels, a real-width DiT layer in bfloat16, layers scanned,
one VAE decode chunk and (optionally) the official PyTorch layer, printed as Markdown tables.

    python -m benchmarks.device                         # one H200: the release's sizes, under 8 minutes
    python -m benchmarks.device --smoke                 # the same code paths on the CPU, tiny sizes, seconds
    python -m benchmarks.device --official_src=DIR      # adds (e): the official block (needs torch there)
    python -m benchmarks.device --sections=attention,vae

Sections (each runs in its own process, so every peak-memory figure and every failure is its own):
(a) `attention`: cudnn / xla / chunked self-attention (48 heads x 128; 4,743 and 9,486 tokens are the
    release video's per-device tokens on 8 and 4 devices, 37,944 the whole video); time, TFLOP/s with
    FLOPs = 4 B H N^2 D, and each kernel's largest difference from the float32 `xla` reference on the first
    queries (tolerance by dtype: `AGREE_TOL`). `xla` is skipped where its [B, H, N, N] logits cannot fit.
(b) `layer`: one `DiTBlock` (width 6144, 48 heads, random weights) at 37,944 tokens, CFG batch 2, against
    the stated dense bf16 peak (`--peak_tflops`, 990 for an H200 SXM) and a bf16 `jnp.dot` measured in the
    same process.
(c) `scan`: the whole DiT forward with 1 and 4 scanned layers: per-layer cost (the marginal layer).
(d) `vae`: one decoder chunk (3 latent frames -> 17 frames at 544x992, real widths): time, device peak
    memory (`memory_stats`; the process's max RSS where a backend has none) and XLA's compiled temp bytes.
(e) `official`: only with `--official_src=DIR` (a Step-Video-TI2V checkout read from a scratch folder,
    never bundled) and torch: its `StepVideoTransformerBlock` on the same inputs' shapes; ratio ours/theirs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import subprocess
import sys
import time

SECTIONS = ("attention", "layer", "scan", "vae", "official")
# Largest |kernel - xla float32| allowed on the compared outputs, by compute dtype (outputs are O(1)).
AGREE_TOL = {"float32": 1e-4, "bfloat16": 3e-2}
H200_SXM_DENSE_BF16_TFLOPS = 990.0  # NVIDIA's H200 SXM datasheet figure (dense, no sparsity)


@dataclasses.dataclass(frozen=True)
class Sizes:
    attn_tokens: tuple[int, ...]
    heads: int
    head_dim: int
    rope_split: tuple[int, int, int]
    attn_batch: int
    check_queries: int  # queries compared against the float32 xla reference
    grid: tuple[int, int, int]  # latent (frames, height, width) of the DiT layer (patch size 1)
    batch: int  # CFG batch
    llm_tokens: int
    clip_tokens: int
    caption_channels: tuple[int, int]
    scan_layers: tuple[int, ...]
    vae: str  # "real" widths or "narrow" (a tiny structure for the smoke run)
    vae_latent: tuple[int, int, int]  # one decoder chunk: (latent frames, height, width)
    dtype: str
    warmup: int
    repeats: int
    dot_size: int  # square matmul measured as the practical peak


REAL = Sizes(
    attn_tokens=(4743, 9486, 37944),
    heads=48,
    head_dim=128,
    rope_split=(64, 32, 32),
    attn_batch=1,
    check_queries=256,
    grid=(18, 34, 62),
    batch=2,
    llm_tokens=320,
    clip_tokens=77,
    caption_channels=(6144, 1024),
    scan_layers=(1, 4),
    vae="real",
    vae_latent=(3, 34, 62),
    dtype="bfloat16",
    warmup=2,
    repeats=5,
    dot_size=8192,
)
SMOKE = Sizes(
    attn_tokens=(40, 80, 160),
    heads=2,
    head_dim=16,
    rope_split=(8, 4, 4),
    attn_batch=1,
    check_queries=32,
    grid=(2, 4, 6),
    batch=2,
    llm_tokens=6,
    clip_tokens=4,
    caption_channels=(32, 16),
    scan_layers=(1, 4),
    vae="narrow",
    vae_latent=(3, 2, 2),
    dtype="float32",
    warmup=1,
    repeats=2,
    dot_size=256,
)


def attention_flops(batch: int, heads: int, q_tokens: int, kv_tokens: int, head_dim: int) -> float:
    """QK^T and PV, 2 FLOPs per multiply-add (softmax not counted)."""
    return 4.0 * batch * heads * q_tokens * kv_tokens * head_dim


def _dit_config(s: Sizes, num_layers: int, kernel: str):
    from stepvideo_jax.dit import DiTConfig

    return DiTConfig(
        num_heads=s.heads,
        head_dim=s.head_dim,
        rope_split=s.rope_split,
        num_layers=num_layers,
        caption_channels=s.caption_channels,
        param_dtype=s.dtype,
        dtype=s.dtype,
        attention_kernel=kernel,
    )


def layer_flops(s: Sizes) -> float:
    """One block's analytic FLOPs at the benchmark's sizes (the per-layer term of `analytic_flops`)."""
    from benchmarks.dit_efficiency import analytic_flops

    n = s.grid[0] * s.grid[1] * s.grid[2]
    one, two = (analytic_flops(_dit_config(s, L, "xla"), s.batch, n, s.llm_tokens, s.clip_tokens) for L in (1, 2))
    return two - one


def random_state(make, seed: int = 0):
    """(graphdef, state) of the module `make()` builds, with random weights drawn on the host: uniform with
    unit variance scaled by 1/sqrt(fan-in) (1-D parameters around 1). Cheaper than running the modules'
    initialisers (no per-shape compiles) and enough for timing and memory figures."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    graphdef, abstract = nnx.split(nnx.eval_shape(make))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        shape = tuple(leaf.shape)
        x = rng.random(shape, dtype=np.float32) * np.float32(2 * 3**0.5) - np.float32(3**0.5)
        x *= np.float32(0.1) if len(shape) < 2 else np.float32((x.size // shape[-1]) ** -0.5)
        return jnp.asarray(x + (1 if len(shape) < 2 else 0), leaf.dtype)

    return graphdef, jax.tree.map(draw, abstract)


# ---------------------------------------------------------------------------------------------- sections
def _section_attention(s: Sizes, a) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.common import median_seconds
    from stepvideo_jax.attention import KERNELS, dot_product_attention

    dtype = jnp.dtype(s.dtype)
    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    kernels = [k for k in a.kernels.split(",") if k]
    ref_fn = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, kernel="xla"))
    rows = []
    for n in s.attn_tokens:
        keys = jax.random.split(jax.random.key(n), 3)
        q, k, v = (jax.random.normal(kk, (s.attn_batch, n, s.heads, s.head_dim), dtype) for kk in keys)
        c = min(s.check_queries, n)
        f32 = lambda x: x.astype(jnp.float32)
        ref = ref_fn(f32(q[:, :c]), f32(k), f32(v))  # [B, c, H, D]
        flops = attention_flops(s.attn_batch, s.heads, n, n, s.head_dim)
        for name in kernels:
            row = {"tokens": n, "kernel": name, "gflop": flops / 1e9}
            # [B, H, N, N] float32 logits and probabilities plus the dtype's probabilities.
            xla_bytes = s.attn_batch * s.heads * n * n * (8 + dtype.itemsize)
            if name not in KERNELS or not KERNELS[name][1]():
                row["skipped"] = f"not available on {jax.default_backend()}"
            elif name == "xla" and limit and xla_bytes > 0.5 * limit:
                row["skipped"] = f"logits need ~{xla_bytes / 2**30:.0f} GiB (> half of {limit / 2**30:.0f} GiB)"
            else:
                fn = jax.jit(functools.partial(dot_product_attention, kernel=name))
                out = fn(q, k, v)
                row["max_abs_diff"] = float(jnp.max(jnp.abs(f32(out[:, :c]) - ref)))
                row["seconds"] = median_seconds(functools.partial(fn, q, k, v), warmup=s.warmup, repeats=s.repeats)
                row["tflops"] = flops / row["seconds"] / 1e12
            rows.append(row)
    return {"rows": rows, "tolerance": AGREE_TOL[s.dtype], "check_queries": s.check_queries}


def _dit_inputs(s: Sizes, hidden: int):
    """Text context, its prefix mask (the last quarter of the LLM tokens padding), modulation, RoPE tables."""
    import jax
    import jax.numpy as jnp

    from stepvideo_jax.dit.rope import grid_positions, rope_tables

    dtype = jnp.dtype(s.dtype)
    m = s.clip_tokens + s.llm_tokens
    context = jax.random.normal(jax.random.key(3), (s.batch, m, hidden), dtype)  # [B, M, D]
    mask = jnp.broadcast_to(jnp.arange(m) < m - s.llm_tokens // 4, (s.batch, m))  # [B, M]
    modulation = jax.random.normal(jax.random.key(4), (s.batch, 6, hidden), dtype) * 0.1  # [B, 6, D]
    cos, sin = rope_tables(grid_positions(*s.grid), s.rope_split, 10000.0)  # [N, head_dim]
    return context, mask, modulation, cos, sin


def _section_layer(s: Sizes, a) -> dict:
    import jax
    from flax import nnx

    from benchmarks.common import matmul_peak_flops, median_seconds
    from stepvideo_jax.attention import resolve_kernel
    from stepvideo_jax.dit.blocks import DiTBlock

    cfg = _dit_config(s, 1, resolve_kernel(a.dit_kernel))
    graphdef, state = random_state(lambda: DiTBlock(cfg, rngs=nnx.Rngs(0)))
    n = s.grid[0] * s.grid[1] * s.grid[2]
    x = jax.random.normal(jax.random.key(1), (s.batch, n, cfg.hidden_size), cfg.jnp_dtype)  # [B, N, D]
    context, mask, modulation, cos, sin = _dit_inputs(s, cfg.hidden_size)
    fwd = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, context, mask, modulation, cos, sin))
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(state, x))
    first = time.perf_counter() - t0
    secs = median_seconds(lambda: fwd(state, x), warmup=s.warmup, repeats=s.repeats)
    dot, dot_n = matmul_peak_flops(sizes=(s.dot_size,), dtype=cfg.jnp_dtype)
    flops = layer_flops(s)
    return {
        "tokens": n,
        "batch": s.batch,
        "text_tokens": s.clip_tokens + s.llm_tokens,
        "kernel": cfg.attention_kernel,
        "width": cfg.hidden_size,
        "gflop": flops / 1e9,
        "seconds": secs,
        "first_call_s": first,
        "tflops": flops / secs / 1e12,
        "peak_tflops": a.peak_tflops,
        "dot_tflops": dot / 1e12,
        "dot_n": dot_n,
    }


def _time_dit_forward(s: Sizes, cfg) -> float:
    """Median seconds of the whole DiT forward (CFG batch, TI2V condition and motion score) at `s`'s sizes."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.common import median_seconds
    from stepvideo_jax.dit import StepVideoDiT

    graphdef, state = random_state(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)))
    key = jax.random.key(1)
    x = jax.random.normal(key, (s.batch, *s.grid, cfg.in_channels), cfg.jnp_dtype)  # [B, F, H, W, C]
    llm = jax.random.normal(key, (s.batch, s.llm_tokens, s.caption_channels[0]), cfg.jnp_dtype)
    clip = jax.random.normal(key, (s.batch, s.clip_tokens, s.caption_channels[1]), cfg.jnp_dtype)
    mask = jnp.ones((s.batch, s.clip_tokens + s.llm_tokens))
    t = jnp.full((s.batch,), 0.5)
    fwd = jax.jit(lambda state, x: nnx.merge(graphdef, state).forward(x, t, llm, mask, clip, jnp.zeros_like(x), 5.0))
    return median_seconds(lambda: fwd(state, x), warmup=s.warmup, repeats=s.repeats)


def _section_scan(s: Sizes, a) -> dict:
    from benchmarks.dit_efficiency import analytic_flops
    from stepvideo_jax.attention import resolve_kernel

    rows = []
    n = s.grid[0] * s.grid[1] * s.grid[2]
    for layers in s.scan_layers:
        cfg = _dit_config(s, layers, resolve_kernel(a.dit_kernel))
        secs = _time_dit_forward(s, cfg)  # each model's weights are freed before the next is built
        flops = analytic_flops(cfg, s.batch, n, s.llm_tokens, s.clip_tokens)
        rows.append({"layers": layers, "seconds": secs, "gflop": flops / 1e9, "tflops": flops / secs / 1e12})
    return {"rows": rows, "tokens": n, "kernel": resolve_kernel(a.dit_kernel)}


def _section_vae(s: Sizes, a) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.common import median_seconds
    from benchmarks.vae import _peak_bytes
    from stepvideo_jax.vae import VAEConfig, VideoVAE
    from stepvideo_jax.vae.model import _decode_program

    if s.vae == "real":
        cfg = VAEConfig.real(param_dtype=s.dtype, dtype=s.dtype)
    else:  # the fixture's structure at the narrowest widths its checks allow, with the 3D convs a GPU runs
        cfg = VAEConfig.tiny(
            norm_groups=8,
            encoder_ch=8,
            decoder_ch=8,
            num_res_blocks=1,
            z_channels=2,
            param_dtype=s.dtype,
            dtype=s.dtype,
            conv_impl="conv3d",
        )
    graphdef, state = random_state(lambda: VideoVAE(cfg, rngs=nnx.Rngs(0)))
    f, h, w = s.vae_latent
    z = jax.random.normal(jax.random.key(0), (1, f, h, w, cfg.z_channels), cfg.jnp_dtype)  # [1, F', h, w, z]
    nnx.merge(graphdef, state).check_latent_shape(z.shape, channels_last=True)
    # The program `decode_channels_last` runs, compiled once: its temp bytes, then its calls timed.
    t0 = time.perf_counter()
    compiled = _decode_program.lower(graphdef, state, z, sequential=True, tile=None, overlap=4).compile()
    compile_s = time.perf_counter() - t0
    temp = compiled.memory_analysis().temp_size_in_bytes
    out = jax.block_until_ready(compiled(state, z))  # [1, F, H, W, 3]
    secs = median_seconds(lambda: compiled(state, z), warmup=1, repeats=max(2, s.repeats - 2))
    kind, peak = _peak_bytes()
    params = sum(int(x.size) for x in jax.tree.leaves(state))
    return {
        "latent": list(z.shape),
        "output": list(out.shape),
        "params_m": params / 1e6,
        "dtype": s.dtype,
        "conv_impl": cfg.conv_impl,
        "compile_s": compile_s,
        "seconds": secs,
        "peak_kind": kind,
        "peak_bytes": peak,
        "temp_bytes": int(temp),
        "finite": bool(jnp.isfinite(out).all()),
    }


def _section_official(s: Sizes, a) -> dict:
    """The official `StepVideoTransformerBlock` (torch SDPA attention) on our layer's shapes, timed with
    CUDA synchronisation. The package's `__init__` (which needs xfuser) is bypassed: only its modules load."""
    import statistics
    import types

    import torch

    pkg_dir = os.path.join(a.official_src, "stepvideo")
    if not os.path.isfile(os.path.join(pkg_dir, "modules", "blocks.py")):
        raise SystemExit(
            f"--official_src must be a Step-Video-TI2V checkout with stepvideo/modules/blocks.py; got {a.official_src!r}"
        )
    sys.path.insert(0, a.official_src)
    pkg = types.ModuleType("stepvideo")
    pkg.__path__ = [pkg_dir]
    sys.modules["stepvideo"] = pkg
    parallel = types.ModuleType("stepvideo.parallel")  # sequence parallelism is not used on one device
    parallel.get_sequence_parallel_world_size = lambda: 1
    parallel.get_sequence_parallel_rank = lambda: 0
    sys.modules["stepvideo.parallel"] = parallel
    from stepvideo.modules.blocks import StepVideoTransformerBlock

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[s.dtype]
    d = s.heads * s.head_dim
    n, m = s.grid[0] * s.grid[1] * s.grid[2], s.clip_tokens + s.llm_tokens
    torch.manual_seed(0)
    block = (
        StepVideoTransformerBlock(dim=d, attention_head_dim=s.head_dim, attention_type="torch").to(dev, dtype).eval()
    )
    q = torch.randn(s.batch, n, d, device=dev, dtype=dtype)
    kv = torch.randn(s.batch, m, d, device=dev, dtype=dtype)
    timestep = torch.randn(s.batch, 6 * d, device=dev, dtype=dtype) * 0.1
    valid = torch.arange(m, device=dev) < m - s.llm_tokens // 4
    attn_mask = valid[None, None, :].expand(s.batch, n, m)  # [B, N, M] bool, as the release builds it
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    run = lambda: block(q, kv, timestep=timestep, attn_mask=attn_mask, rope_positions=list(s.grid))
    for _ in range(s.warmup):
        run()
    sync()
    times = []
    for _ in range(s.repeats):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    secs = statistics.median(times)
    flops = layer_flops(s)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    return {"seconds": secs, "tflops": flops / secs / 1e12, "torch": torch.__version__, "device": name, "machine": ""}


_RUNNERS = {
    "attention": _section_attention,
    "layer": _section_layer,
    "scan": _section_scan,
    "vae": _section_vae,
    "official": _section_official,
}


# ---------------------------------------------------------------------------------------------- report
def _md(header, rows) -> str:
    from benchmarks.common import md_table

    return md_table(header, rows)


def render(results: dict, s: Sizes, a) -> str:
    """Markdown tables (a)-(e) from the sections' results; a failed section shows its error."""
    from benchmarks.common import fmt_bytes

    out = []

    def failed(name):
        r = results.get(name)
        if r is not None and "error" in r:
            out.append(f"FAILED: {r['error']}\n")
            return True
        return r is None

    out.append(f"### (a) Self-attention kernels: {s.heads} heads x {s.head_dim}, batch {s.attn_batch}, {s.dtype}\n")
    if not failed("attention"):
        r = results["attention"]
        rows = []
        for row in r["rows"]:
            if "skipped" in row:
                rows.append(
                    [row["tokens"], row["kernel"], f"{row['gflop']:.4g}", "-", "-", "-", f"skipped: {row['skipped']}"]
                )
                continue
            ok = "yes" if row["max_abs_diff"] <= r["tolerance"] else "NO"
            rows.append(
                [
                    row["tokens"],
                    row["kernel"],
                    f"{row['gflop']:.4g}",
                    f"{row['seconds'] * 1e3:.2f}",
                    f"{row['tflops']:.3g}",
                    f"{row['max_abs_diff']:.2e}",
                    ok,
                ]
            )
        out.append(
            _md(
                [
                    "tokens",
                    "kernel",
                    "GFLOP (4BHN^2D)",
                    "ms (median)",
                    "TFLOP/s",
                    f"max abs diff vs xla float32 (first {r['check_queries']} queries)",
                    f"agrees (<= {r['tolerance']:g})",
                ],
                rows,
            )
            + "\n"
        )
    out.append(f"### (b) One DiT layer, {s.dtype}, random weights\n")
    if not failed("layer"):
        r = results["layer"]
        out.append(
            f"Width {r['width']} ({s.heads} heads x {s.head_dim}), {r['tokens']} video tokens, CFG batch "
            f"{r['batch']}, {r['text_tokens']} text tokens, attention kernel `{r['kernel']}`. Stated peak: "
            f"{r['peak_tflops']:g} TFLOP/s (dense bf16, H200 SXM datasheet); measured: a {r['dot_n']}^3 "
            f"`jnp.dot` in {s.dtype} in the same process.\n"
        )
        out.append(
            _md(
                [
                    "what",
                    "GFLOP (analytic)",
                    "first call s",
                    "ms (median)",
                    "TFLOP/s",
                    "fraction of stated peak",
                    "measured dot TFLOP/s",
                    "fraction of measured dot",
                ],
                [
                    [
                        "DiTBlock forward",
                        f"{r['gflop']:.4g}",
                        f"{r['first_call_s']:.1f}",
                        f"{r['seconds'] * 1e3:.1f}",
                        f"{r['tflops']:.3g}",
                        f"{r['tflops'] / r['peak_tflops']:.3f}",
                        f"{r['dot_tflops']:.3g}",
                        f"{r['tflops'] / r['dot_tflops']:.2f}",
                    ]
                ],
            )
            + "\n"
        )
    out.append(f"### (c) Whole DiT forward, layers scanned (nnx.scan), {s.dtype}\n")
    if not failed("scan"):
        r = results["scan"]
        first = r["rows"][0]
        rows = []
        for row in r["rows"]:
            marginal = (
                "-"
                if row is first
                else f"{(row['seconds'] - first['seconds']) / (row['layers'] - first['layers']) * 1e3:.1f}"
            )
            rows.append(
                [
                    row["layers"],
                    f"{row['gflop']:.4g}",
                    f"{row['seconds'] * 1e3:.1f}",
                    f"{row['seconds'] / row['layers'] * 1e3:.1f}",
                    marginal,
                    f"{row['tflops']:.3g}",
                ]
            )
        out.append(
            f"{r['tokens']} video tokens, CFG batch {s.batch}, kernel `{r['kernel']}`; the forward includes the "
            f"patch embedding, text projection, AdaLN and output head once.\n"
        )
        out.append(
            _md(
                [
                    "layers",
                    "GFLOP (analytic)",
                    "ms (median)",
                    "ms / layers",
                    f"marginal ms per layer (vs {first['layers']})",
                    "TFLOP/s",
                ],
                rows,
            )
            + "\n"
        )
    out.append(f"### (d) VAE decode, one chunk ({s.vae} widths, {s.dtype})\n")
    if not failed("vae"):
        r = results["vae"]
        out.append(
            _md(
                [
                    "latents (B,F,h,w,z)",
                    "output (B,F,H,W,C)",
                    "params (M)",
                    "compile s",
                    "ms (median)",
                    f"peak memory ({r['peak_kind']})",
                    "compiled temp",
                    "finite",
                ],
                [
                    [
                        tuple(r["latent"]),
                        tuple(r["output"]),
                        f"{r['params_m']:.1f}",
                        f"{r['compile_s']:.1f}",
                        f"{r['seconds'] * 1e3:.1f}",
                        fmt_bytes(r["peak_bytes"]),
                        fmt_bytes(r["temp_bytes"]),
                        r["finite"],
                    ]
                ],
            )
            + "\n"
        )
    out.append("### (e) The same layer through the official PyTorch code\n")
    if not a.official_src:
        out.append("not run: no `--official_src=DIR` given (torch and a Step-Video-TI2V checkout are needed).\n")
    elif not failed("official"):
        r, ours = results["official"], results.get("layer", {})
        ratio = f"{ours['seconds'] / r['seconds']:.2f}" if "seconds" in ours else "-"
        out.append(
            _md(
                ["what", "ms (median)", "TFLOP/s", "ours / theirs (time)"],
                [
                    [
                        (
                            f"official StepVideoTransformerBlock (torch {r['torch']}, attention_type 'torch' = SDPA, "
                            f"{r['device']})"
                        ),
                        f"{r['seconds'] * 1e3:.1f}",
                        f"{r['tflops']:.3g}",
                        ratio,
                    ]
                ],
            )
            + "\n"
        )
    return "\n".join(out)


def _run_here(name: str, s: Sizes, a) -> dict:
    import jax

    from benchmarks.common import machine_description

    result = _RUNNERS[name](s, a)
    if "device" not in result:  # the torch section names its own (no JAX client beside torch's)
        result.update(device=jax.devices()[0].device_kind, machine=machine_description())
    return result


def _run_section(name: str, argv: list[str]) -> dict:
    """One section in a fresh process: clean device memory and peak counters; a crash stays in its row."""
    cmd = [sys.executable, "-m", "benchmarks.device", f"--section={name}", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " / ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail[-600:]}"}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, float32, any backend (CPU in the tests)")
    p.add_argument("--sections", default="attention,layer,scan,vae,official", help=f"any of {','.join(SECTIONS)}")
    p.add_argument("--kernels", default="cudnn,xla,chunked", help="attention kernels of table (a)")
    p.add_argument("--dit_kernel", default="auto", help="attention kernel inside the DiT ('auto': cudnn on GPU)")
    p.add_argument("--peak_tflops", type=float, default=H200_SXM_DENSE_BF16_TFLOPS, help="stated dense peak")
    p.add_argument("--official_src", default="", help="a Step-Video-TI2V checkout (scratch folder) for table (e)")
    p.add_argument("--json", default="", help="also write the raw results here")
    p.add_argument(
        "--in_process",
        action="store_true",
        help="run the sections in this process (one interpreter start; peaks and failures then shared)",
    )
    p.add_argument("--section", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    s = SMOKE if a.smoke else REAL
    wanted = [x for x in a.sections.split(",") if x]
    bad = sorted(set(wanted) - set(SECTIONS)) + ([a.section] if a.section and a.section not in SECTIONS else [])
    if bad:
        p.error(f"unknown section(s) {bad}; expected some of {', '.join(SECTIONS)}")
    if a.official_src and not os.path.isdir(a.official_src):
        p.error(f"--official_src must be an existing folder (a Step-Video-TI2V checkout); got {a.official_src!r}")
    if a.section:
        print(json.dumps(_run_here(a.section, s, a)))
        return 0
    passed = [
        f"--kernels={a.kernels}",
        f"--dit_kernel={a.dit_kernel}",
        f"--peak_tflops={a.peak_tflops}",
        f"--official_src={a.official_src}",
    ] + (["--smoke"] if a.smoke else [])
    t0 = time.perf_counter()
    results = {}
    for name in wanted:
        if name == "official" and not a.official_src:
            continue
        t = time.perf_counter()
        results[name] = _run_here(name, s, a) if a.in_process else _run_section(name, passed)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    ran = next((r for r in results.values() if "device" in r), {"device": "?", "machine": "?"})
    mode = "CPU smoke sizes (code paths only; not performance figures)" if a.smoke else "release sizes"
    print(
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {mode}; device "
        f"{ran['device']}; {ran['machine']}; all sections {time.perf_counter() - t0:.0f} s\n"
    )
    print(render(results, s, a))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"sizes": dataclasses.asdict(s), "results": results}, f, indent=1)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
