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


def test_plan_quantize_shrinks_weight_arguments_and_compiles_clip():
    # The Step-LLM (cheap to compile) stands for both quantized parts; the DiT's 30B figures are in
    # benchmarks/gpu_plans (27.49 GiB int8 vs 54.75 bf16). clip and vae share one branch.
    from stepvideo_jax.testing import tiny_clip_config, tiny_step_llm_config

    dit = DiTConfig(num_heads=2, head_dim=16, num_layers=1, caption_channels=(64, 32), rope_split=(8, 4, 4))
    sizes = PlanSizes(frames=17, height=64, width=64, llm_tokens=8, clip_tokens=4)
    llm = tiny_step_llm_config(param_dtype="bfloat16", dtype="bfloat16", vocab_size=64)
    clip = tiny_clip_config(param_dtype="bfloat16", dtype="bfloat16")
    kw = dict(llm_cfg=llm, flops=False, part_configs=dict(clip=clip))
    bf16 = plan(dit, MeshConfig(), sizes, what=("llm", "clip"), **kw)
    int8 = plan(dit, MeshConfig(), sizes, what=("llm",), quantize="int8", **kw)
    assert int8["quantize"] == "int8" and "quantize" not in bf16
    # int8 kernels (1 byte) + per-channel scales vs bf16 kernels (2 bytes)
    assert int8["llm"]["argument_bytes"] < 0.8 * bf16["llm"]["argument_bytes"]
    assert bf16["clip"]["argument_bytes"] > 0 and bf16["clip"]["temp_bytes"] > 0
    assert bf16["clip"]["peak_bytes"] >= bf16["clip"]["argument_bytes"]
    assert "clip" in format_report(bf16)


def test_plan_cli_rejects_quantized_training_and_unknown_parts():
    import pytest

    from stepvideo_jax.tools.plan import main

    with pytest.raises(SystemExit, match="--quantize applies to the sample and llm parts"):
        main(["--parts=sample,train", "--quantize=int8"])
    with pytest.raises(SystemExit, match="unknown"):
        main(["--parts=sample,decode"])


def test_gpu_fit_estimate_peaks_from_stage_reports():
    from benchmarks.gpu_plan_tables import load_stages, residency_peaks, stage_estimates, tables

    def rep(args, temp):
        return dict(argument_bytes=args, output_bytes=1, temp_bytes=temp)

    stages = {
        "llm encode": {"bf16": rep(40, 80), "int8": rep(20, 2)},
        "clip encode": {"bf16": rep(1, 3), "int8": rep(1, 3)},
        "dit": {"bf16": rep(60, 130), "int8": rep(30, 16)},
        "vae": {"bf16": rep(1, 25), "int8": rep(1, 25)},
    }
    est = stage_estimates(stages)
    # bf16 stacked programs take the int8 programs' temporaries (no XLA:CPU float32 weight copies).
    assert est["dit"]["bf16"]["temp"] == 16 and est["dit"]["bf16"]["peak"] == 60 + 1 + 16
    peaks = residency_peaks(est)
    assert peaks[("sequential", "bf16")] == 77  # the DiT stage; text stage = 40 + 1 + 4
    assert peaks[("sequential", "int8")] == 47  # 30 + 1 + 16 vs text 20 + 1 + 4 and VAE 1 + 1 + 25
    assert peaks[("all", "int8")] == 20 + 1 + 30 + 1 + 26  # every weight + the largest stage's temporaries
    # The committed reports (benchmarks/gpu_plans/) render.
    assert set(load_stages()) and "int8 sequential" in tables()
