"""DiT efficiency on this machine: achieved FLOP/s of a matmul-bound forward over the measured peak
of a large `jnp.dot` in the same run (float32).

    python -m benchmarks.dit_efficiency

Config: 16 heads x 128 (width 2048), 4 layers, 3x16x16 latents (768 tokens), CFG batch 2, 64 text
tokens. FLOPs are counted analytically (matmuls and attention) and checked against XLA's
`cost_analysis()`. The second row is one full sampling step: both CFG rows through the model,
guidance and the Euler update, in one jitted function.
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.common import machine_description, matmul_peak_flops, md_table, median_seconds
from stepvideo_jax.dit import DiTConfig, StepVideoDiT

HEADS, HEAD_DIM, LAYERS = 16, 128, 4
F, H, W, C = 3, 16, 16, 64
BATCH = 2
LLM_TOKENS, CLIP_TOKENS = 48, 16


def analytic_flops(
    cfg: DiTConfig, batch: int, n: int, llm_tokens: int = LLM_TOKENS, clip_tokens: int = CLIP_TOKENS
) -> float:
    """Matmul + attention FLOPs (2 per multiply-add) of one forward with n video tokens."""
    m = llm_tokens + clip_tokens
    d = cfg.hidden_size
    per_layer = (
        2 * n * d * 3 * d  # wqkv
        + 2 * 2 * n * n * d  # QK^T and PV
        + 2 * n * d * d  # self wo
        + 2 * n * d * d  # cross wq
        + 2 * m * d * 2 * d  # cross wkv
        + 2 * 2 * n * m * d  # cross QK^T and PV
        + 2 * n * d * d  # cross wo
        + 2 * 2 * n * d * cfg.ffn_mult * d  # FFN
    )
    embed = 2 * n * cfg.patch_in_channels * d + 2 * n * d * cfg.out_channels
    text = 2 * (
        llm_tokens * cfg.caption_channels[0] * d + llm_tokens * d * d + clip_tokens * cfg.caption_channels[1] * d
    )
    adaln = 2 * (256 * d + d * d) * 2 + 2 * d * 6 * d
    return batch * (cfg.num_layers * per_layer + embed + text + adaln)


def _xla_flops(cfg, x, t, llm, mask, clip, cond) -> float:
    """XLA's count for the same forward with layers unrolled (cost_analysis counts a scan body once)."""
    unrolled = dataclasses.replace(cfg, scan_layers=False)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: StepVideoDiT(unrolled, rngs=nnx.Rngs(0))))
    fwd = jax.jit(lambda state, x: nnx.merge(graphdef, state).forward(x, t, llm, mask, clip, cond, 5.0))
    cost = fwd.lower(state, x).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost).get("flops", float("nan")))


def _transcendental_seconds(cfg: DiTConfig, n: int) -> float:
    """Wall time of the forward's transcendental elementwise work alone: tanh-GELU on the FFN
    activations and the softmax (exp) on the self-attention logits, for every layer."""
    k = jax.random.key(2)
    ffn = jax.random.normal(k, (BATCH * n, cfg.ffn_mult * cfg.hidden_size))
    logits = jax.random.normal(k, (BATCH, cfg.num_heads, n, n))
    f = jax.jit(lambda a, b: (jax.nn.gelu(a, approximate=True), jax.nn.softmax(b, axis=-1)))
    return cfg.num_layers * median_seconds(lambda: f(ffn, logits), warmup=2, repeats=7)


def main() -> None:
    cfg = DiTConfig(
        num_heads=HEADS,
        head_dim=HEAD_DIM,
        num_layers=LAYERS,
        in_channels=C,
        out_channels=C,
        caption_channels=(1024, 256),
        attention_kernel="xla",
    )
    model = StepVideoDiT(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    key = jax.random.key(1)
    x = jax.random.normal(key, (BATCH, F, H, W, C))
    cond = jnp.zeros_like(x)
    llm = jax.random.normal(key, (BATCH, LLM_TOKENS, 1024))
    clip = jax.random.normal(key, (BATCH, CLIP_TOKENS, 256))
    mask = jnp.ones((BATCH, CLIP_TOKENS + LLM_TOKENS))
    t = jnp.full((BATCH,), 0.5)

    @jax.jit
    def forward(state, x):
        m = nnx.merge(graphdef, state)
        return m.forward(x, t, llm, mask, clip, cond, 5.0)

    @jax.jit
    def sampling_step(state, latents, sigma, sigma_next):
        m = nnx.merge(graphdef, state)
        v = m.forward(jnp.concatenate([latents, latents]), jnp.full((2,), sigma), llm, mask, clip, cond, 5.0)
        v = v[1] + 9.0 * (v[0] - v[1])
        return (latents[0] + (sigma_next - sigma) * v.astype(jnp.float32))[None]

    n = F * H * W
    flops = analytic_flops(cfg, BATCH, n)
    xla_flops = _xla_flops(cfg, x, t, llm, mask, clip, cond)
    lat = x[:1]
    sigma, sigma_next = jnp.float32(0.3), jnp.float32(0.35)
    # Interleave the two measurements and the peak so that drifts of the machine hit all of them.
    fwd_times, step_times = [], []
    for _ in range(3):
        fwd_times.append(median_seconds(lambda: forward(state, x), warmup=1, repeats=3))
        step_times.append(median_seconds(lambda: sampling_step(state, lat, sigma, sigma_next), warmup=1, repeats=3))
    peak, peak_n = matmul_peak_flops()
    elementwise_s = _transcendental_seconds(cfg, n)
    fwd_s, step_s = statistics.median(fwd_times), statistics.median(step_times)
    step_flops = flops + 10 * lat.size
    print(f"Machine: {machine_description()}\n")
    print(
        f"FLOPs check: analytic {flops / 1e9:.1f} GFLOP vs XLA cost_analysis {xla_flops / 1e9:.1f} GFLOP "
        f"(unrolled layers; ratio {xla_flops / flops:.3f}; XLA also counts softmax, norms and elementwise ops)\n"
    )
    rows = [
        [
            "DiT forward (CFG batch 2)",
            f"{flops / 1e9:.1f}",
            f"{xla_flops / 1e9:.1f}",
            f"{fwd_s * 1e3:.1f}",
            f"{flops / fwd_s / 1e9:.1f}",
            f"{peak / 1e9:.1f}",
            f"{flops / fwd_s / peak:.2f}",
        ],
        [
            "sampling step (2 CFG rows + guidance + Euler)",
            f"{step_flops / 1e9:.1f}",
            "",
            f"{step_s * 1e3:.1f}",
            f"{step_flops / step_s / 1e9:.1f}",
            f"{peak / 1e9:.1f}",
            f"{step_flops / step_s / peak:.2f}",
        ],
    ]
    print(
        f"Transcendental elementwise work alone (tanh-GELU on the FFN activations + softmax on the "
        f"self-attention logits, {cfg.num_layers} layers): {elementwise_s * 1e3:.0f} ms = "
        f"{elementwise_s / fwd_s:.0%} of the forward; forward without it: "
        f"{flops / (fwd_s - elementwise_s) / peak:.2f} of peak\n"
    )
    print(
        md_table(
            [
                "what",
                "GFLOP (analytic)",
                "GFLOP (XLA cost_analysis)",
                "ms (median)",
                "GFLOP/s",
                f"matmul peak GFLOP/s ({peak_n}^3 f32 dot)",
                "fraction of peak (target >= 0.85)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
