"""Smoke test of the AOT plan tool on a tiny DiT (the 30B runs are recorded in docs/scaling.md)."""

import numpy as np
from flax import nnx

from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.sharding import MeshConfig
from stepvideo_jax.tools.plan import PlanSizes, _dit_model_flops, format_report, plan


def test_plan_reports_sharded_memory_and_flops():
    cfg = DiTConfig(
        num_heads=8, head_dim=16, num_layers=3, in_channels=8, out_channels=8, caption_channels=(32, 16),
        rope_split=(8, 4, 4), attention_kernel="chunked",
    )  # fmt: skip
    sizes = PlanSizes(frames=17, height=64, width=64, llm_tokens=8, clip_tokens=4)
    report = plan(cfg, MeshConfig(fsdp=2, tensor=4), sizes, what=("sample",))
    s = report["sample"]
    param_bytes = sum(
        np.prod(v.shape) * 4
        for _, v in nnx.to_flat_state(nnx.state(nnx.eval_shape(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)))))
    )
    # Per device: well under the whole model (8-way sharded weights), and the inputs on top.
    assert 0 < s["argument_bytes"] < param_bytes / 4
    assert s["temp_bytes"] > 0 and s["peak_bytes"] >= s["argument_bytes"]
    # Per-device FLOPs (extrapolated from unrolled 1/2-layer compiles) at least the model's share.
    model = _dit_model_flops(cfg, sizes, 2, train=False)
    assert s["model_flops_total"] == model
    assert model / 8 <= s["flops_per_device"] <= 2 * model
    assert "sample" in format_report(report)
