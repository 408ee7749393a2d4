"""Projected seconds per video for the real 30B DiT on TPU v5p and H100 (PROJECTIONS, not measurements).

    python -m benchmarks.projections

FLOPs of one DiT forward are counted analytically for the released config (48 layers, 48 x 128 heads,
FFN 4x, 77 CLIP + 320 LLM text tokens) at 102 frames x 544 x 992 (18 x 34 x 62 = 37,944 tokens), and
204 frames for comparison with the release's published Step-Video-T2V timings. A video is 50 steps,
each a CFG batch of 2. seconds = FLOPs / (chips x peak bf16 FLOP/s x MFU). The text encoders and VAE
are left out (a few percent of the DiT's FLOPs). `docs/scaling.md` has the per-device memory from the
plan tool's AOT compilation.
"""

from __future__ import annotations

from benchmarks.common import md_table
from benchmarks.dit_efficiency import analytic_flops
from stepvideo_jax.dit import DiTConfig

# Peak dense bf16 FLOP/s per chip (vendor figures).
CHIPS = {"TPU v5p-8 (4 chips)": (4, 459e12), "TPU v5p-16 (8 chips)": (8, 459e12), "8x H100 SXM": (8, 989e12)}
STEPS = 50
# The release's own table (Step-Video-T2V README, 544x992, 50 steps, with flash-attn, batch 1 with CFG).
PUBLISHED = {204: "743 s", 136: "408 s", 102: "not published"}


def main() -> None:
    cfg = DiTConfig()  # the released 30B TI2V DiT
    rows = []
    for frames in (102, 204):
        tokens = (frames // 17 * 3) * (544 // 16) * (992 // 16)
        flops = STEPS * analytic_flops(cfg, 2, tokens, llm_tokens=320, clip_tokens=77)
        for name, (chips, peak) in CHIPS.items():
            secs = [flops / (chips * peak * mfu) for mfu in (0.4, 0.6)]
            rows.append(
                [frames, tokens, f"{flops / 1e15:.0f}", name, f"{secs[0]:.0f}", f"{secs[1]:.0f}", PUBLISHED[frames]]
            )
    print("**Projections** (analytic FLOPs / assumed MFU; not measured):\n")
    print(
        md_table(
            [
                "frames",
                "tokens",
                "PFLOP per video (50 steps, CFG)",
                "hardware",
                "s/video @40% MFU",
                "s/video @60% MFU",
                "release's published s/video (T2V, GPUs)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
