"""Deviceless TPU compiles (libtpu's compiler on compile-only v5e devices; no TPU needed): a small-width
DiT sampling step and training step with the splash kernel as a real Mosaic kernel, on fsdp and
sequence meshes; plus the HLO / topology helpers of the plan tool on fixed inputs.

The 30B figures are in docs/scaling.md (``python -m stepvideo_jax.tools.plan --target=...``)."""

import importlib.util

import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.tools.plan import PlanSizes
from stepvideo_jax.tools.tpu_target import (
    hlo_collectives,
    mosaic_kernel_count,
    resolve_topology,
    xla_optimal_seconds,
)

HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not HAVE_LIBTPU, reason="libtpu not installed (pip install -e '.[test]' installs it)")

# 8 heads of 128 (the kernel's lane width), 2 scanned layers, 3x8x8 = 192 latent tokens, 16 + 64 text tokens.
SMALL = dict(num_heads=8, head_dim=128, num_layers=2, in_channels=16, out_channels=16, caption_channels=(256, 128))
SIZES = PlanSizes(frames=17, height=128, width=128, llm_tokens=64, clip_tokens=16, cfg_batch=2)
MiB = 2**20


def _param_bytes(cfg) -> int:
    from stepvideo_jax.dit import StepVideoDiT

    abstract = nnx.eval_shape(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)))
    return sum(int(np.prod(v.shape)) * v.dtype.itemsize for _, v in nnx.to_flat_state(nnx.state(abstract)))


def _train_config():
    from stepvideo_jax.tools.tpu_plan import release_train_config

    c = release_train_config()
    c.model.update(SMALL)
    c.model.update(rope_split=(64, 32, 32), scan_layers=True, remat_policy="full", attention_kernel="splash")
    c.data.batch_size = 2
    return c


_CACHE: dict = {}


def _plan(part: str, mesh: str) -> dict:
    """plan_part on v5e:2x2 for the small model (one compile, cached across the tests)."""
    from stepvideo_jax.tools.tpu_plan import plan_part, release_dit

    if (part, mesh) not in _CACHE:
        config = release_dit(**SMALL) if part == "sample" else _train_config()
        _CACHE[part, mesh] = plan_part("v5e:2x2", mesh, part, sizes=SIZES, config=config, extrapolate=False)
    return _CACHE[part, mesh]


@needs_libtpu
@pytest.mark.parametrize("mesh", ["fsdp=4", "sequence=4"])
def test_small_dit_sampling_step_compiles_for_v5e_with_mosaic_splash_and_ulysses(mesh):
    from stepvideo_jax.tools.tpu_plan import release_dit

    r = _plan("sample", mesh)
    assert r["device_kind"] == "TPU v5 lite" and r["devices"] == 4 and r["attention_kernel"] == "splash"
    # The splash kernel is a Mosaic custom call (not interpret mode): one self-, one cross-attention
    # kernel in the scanned layer body.
    assert r["mosaic_kernels_in_hlo"] == 2
    # The CFG batch of 2 cannot take 4 shards, so the 192 tokens are 4-way sharded and 8 heads / 4
    # shards -> Ulysses: q, k, v to head-sharded and the output back = 4 all-to-alls per layer body.
    assert r["collectives_in_hlo"]["all-to-all"]["count"] == 4
    params = _param_bytes(release_dit(**SMALL))
    if mesh == "fsdp=4":  # weights 4-way sharded (the caption / norm vectors that do not divide stay whole)
        assert params / 4 <= r["argument_bytes"] <= params / 4 + 2 * MiB
        assert "all-gather" in r["collectives_in_hlo"]  # weights gathered per layer
    else:  # sequence parallel only: weights replicated on every chip
        assert params <= r["argument_bytes"] <= params + 2 * MiB
    # Temporaries: the activations of one layer (192 tokens x 1024 x 2 rows, a few MiB), not the logits.
    assert 0 < r["temp_bytes"] <= 8 * MiB
    assert (
        r["fits"]
        and r["peak_bytes_per_device"] == r["argument_bytes"] + r["output_bytes"] + r["temp_bytes"] - r["alias_bytes"]
    )


@needs_libtpu
@pytest.mark.parametrize("mesh", ["fsdp=4", pytest.param("sequence=4", marks=pytest.mark.slow)])
def test_small_dit_training_step_compiles_for_v5e(mesh):
    r = _plan("train", mesh)
    assert r["attention_kernel"] == "splash" and r["remat_policy"] == "full"
    # Forward, backward-dq and backward-dkv Mosaic kernels for self- and cross-attention.
    assert r["mosaic_kernels_in_hlo"] >= 4
    # Ulysses per layer: 4 all-to-alls forward, 4 in the rematerialised forward, 4 transposed in the backward.
    assert r["collectives_in_hlo"]["all-to-all"]["count"] == 12
    params = _param_bytes(_train_config_dit())
    # State donated: the new state aliases the old (float32 weights + 2 AdamW moments + EMA = 4x params).
    shard = 4 if mesh == "fsdp=4" else 1
    assert r["alias_bytes"] >= 4 * params / shard
    assert 4 * params / shard <= r["argument_bytes"] <= 4 * params / shard + 4 * MiB
    assert 0 < r["temp_bytes"] <= 4 * params / shard + 16 * MiB


def _lora_train_config(quantize: str):
    """train_ti2v:lora at the small width (bf16 base), through the plan CLI's --quantize handling."""
    from stepvideo_jax.configs import get_config
    from stepvideo_jax.tools.plan import _target_config

    c = get_config("train_ti2v:lora")
    c.model.update(SMALL)
    c.model.update(rope_split=(64, 32, 32), scan_layers=True, remat_policy="full")
    c.data.batch_size = 2
    return _target_config(c, "train", quantize)


@needs_libtpu
# int8 (QLoRA) runs the LoRA path and the quantized base; the bf16 base repeats it (make test-all).
@pytest.mark.parametrize("quantize", [pytest.param("none", marks=pytest.mark.slow), "int8"])
def test_small_dit_lora_training_step_compiles_for_v5e_with_the_frozen_base_as_an_argument(quantize):
    from stepvideo_jax.tools.tpu_plan import plan_part

    config = _lora_train_config(quantize)
    r = plan_part("v5e:2x2", "fsdp=4", "train", sizes=SIZES, config=config, extrapolate=False)
    assert r["attention_kernel"] == "splash" and r["mosaic_kernels_in_hlo"] >= 4  # fwd + bwd splash kernels
    assert r["lora_rank"] == 16 and r["quantize"] == quantize
    adapters, total = r["trainable_params"], r["total_params"]
    assert 0 < adapters < 0.1 * total
    # Donated state = float32 adapters + 2 AdamW moments (no EMA in the lora config), 4-way sharded
    # (A's rank axis and the few vectors that do not divide stay whole: at most 3x the adapters).
    assert r["optimizer_state_bytes"] >= 2 * 4 * adapters
    state = 3 * 4 * adapters
    assert state / 4 <= r["alias_bytes"] <= state
    # The frozen base is an argument (not donated): the base bytes 4-way sharded beside the state; a
    # bf16 base is 2 bytes per weight, an int8 one about 1 (plus float32 scales and bf16 vectors).
    base = r["frozen_base_bytes"]
    full_base = _param_bytes(_train_config_dit())  # the same DiT with float32 weights
    assert base <= (full_base / 2 if quantize == "none" else full_base / 4 + full_base / 16)
    assert base / 4 + r["alias_bytes"] <= r["argument_bytes"] <= base / 4 + state + 4 * MiB
    # Far below full training's state (float32 weights, 2 moments, EMA: 4x the float32 params, sharded).
    assert r["argument_bytes"] < 0.25 * (4 * full_base / 4)
    assert r["fits"]
    # LoRA FLOPs: no weight gradients for the frozen base, so between 2 and 3 forwards (full training: 3).
    from stepvideo_jax.tools.plan import _dit_model_flops

    fwd = _dit_model_flops(_train_config_dit(), SIZES, 2, train=False)
    assert 2 * fwd < r["model_flops"] < 2.5 * fwd


def test_plan_cli_refuses_quantize_for_full_training():
    from stepvideo_jax.tools.plan import main

    for config in ([], ["--config=train_ti2v:full"]):
        with pytest.raises(SystemExit, match="--quantize with the train part needs a LoRA training config"):
            main(["--target=v5e:2x2", "--parts=train", "--quantize=int8", *config])


def _train_config_dit():
    from stepvideo_jax.dit import DiTConfig

    fields = dict(_train_config().model)
    fields.update(caption_channels=tuple(fields["caption_channels"]), rope_split=tuple(fields["rope_split"]))
    return DiTConfig(**fields)


def test_hlo_collectives_counts_instructions_once_per_chain():
    hlo = "\n".join([
        '  %all-gather.1 = bf16[1,1024,4096]{2,1,0} all-gather(%p), channel_id=5, frontend_attributes={chain_id="0"}',
        '  %all-gather.2 = bf16[1,1024,4096]{2,1,0:T(8,128)} all-gather(%q), channel_id=5, frontend_attributes={chain_id="0"}',
        "  %a2a = bf16[2,48,8,128]{3,2,1,0} all-to-all(%x), channel_id=1, dimensions={2}",
        "  %a2b = bf16[2,48,8,128]{3,2,1,0} all-to-all(%y), channel_id=1, dimensions={2}",
        "  ROOT %ar = (f32[16]{0}, f32[8]{0}) all-reduce(%u, %v), channel_id=7",
        "  %cps = (f32[4,4]{1,0}, f32[4,4]{1,0}, u32[], u32[]) collective-permute-start(%w), channel_id=8",
        "  %cpd = f32[4,4]{1,0} collective-permute-done(%cps)",
        '  %k = bf16[2,8,128]{2,1,0} custom-call(%a), custom_call_target="tpu_custom_call"',
        '  %c = bf16[2,8,128]{2,1,0} custom-call(%a, %b), custom_call_target="ConcatBitcast"',
    ])  # fmt: skip
    c = hlo_collectives(hlo)
    assert c["all-gather"] == {"count": 1, "bytes": 2 * 1024 * 4096}
    assert c["all-to-all"] == {"count": 2, "bytes": 2 * (2 * 48 * 8 * 128) * 2}  # two bf16 results
    assert c["all-reduce"] == {"count": 1, "bytes": 4 * 24}
    assert c["collective-permute"] == {"count": 1, "bytes": 4 * 16}
    assert "reduce-scatter" not in c
    assert mosaic_kernel_count(hlo) == 1
    # optimal_seconds counts -1 per ConcatBitcast; the tool adds it back, and refuses what stays negative.
    assert xla_optimal_seconds({"optimal_seconds": -1 + 0.25}, hlo) == pytest.approx(0.25)
    with pytest.raises(RuntimeError, match="unpriced"):
        xla_optimal_seconds({"optimal_seconds": -2.0}, hlo)


def test_topology_names():
    assert resolve_topology("v5p-8") == "v5p:2x2x1"
    assert resolve_topology("v5p-16") == "v5p:2x2x2"
    assert resolve_topology("v5p-64") == "v5p:2x4x4"
    assert resolve_topology("v5litepod-8") == resolve_topology("v5e-8") == "v5e:2x4"
    assert resolve_topology("v6e:2x4") == "v6e:2x4"
    with pytest.raises(ValueError, match="not a TPU topology"):
        resolve_topology("v5p-7")


def test_candidate_meshes_divide_batch_heads_and_devices():
    from stepvideo_jax.tools.tpu_plan import candidate_meshes

    meshes = candidate_meshes(8)
    sizes = {m.ici_sizes(8) for m in meshes}
    assert len(sizes) == len(meshes) and (1, 8, 1, 1) in sizes and (2, 1, 4, 1) in sizes and (1, 1, 1, 8) in sizes
    assert all(d in (1, 2) and 48 % t == 0 and d * f * s * t == 8 for d, f, s, t in sizes)


def test_plan_cli_rejects_bad_target_and_search_without_target():
    from stepvideo_jax.tools.plan import main

    with pytest.raises(SystemExit, match="not a TPU topology"):
        main(["--target=v9z:2x2", "--parts=sample"])
    with pytest.raises(SystemExit, match="--search needs --target"):
        main(["--search"])
    with pytest.raises(SystemExit, match="unknown"):
        main(["--target=v5e:2x2", "--parts=sample,decode"])
    with pytest.raises(SystemExit, match="--vae_tile must be TH,TW"):
        main(["--target=v5e:2x2", "--parts=vae", "--vae_tile=3,3"])
    with pytest.raises(SystemExit, match="--vae_tile applies to the vae part"):
        main(["--target=v5e:2x2", "--parts=sample", "--vae_tile=16,16"])


def test_compiler_out_of_memory_is_a_does_not_fit_row_and_bounds_the_pipeline():
    """The TPU compiler refuses a program whose buffers exceed HBM: the plan reports that as fits: false
    with the compiler's required temporaries, and the pipeline names that stage as its peak."""
    from stepvideo_jax.tools.tpu_plan import _OOM, Program, _does_not_fit, chip_spec, pipeline_summary

    msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
           "(52.93G) exceeds available HBM (15.75G).")  # fmt: skip
    assert _OOM.search(msg) and not _OOM.search("INVALID_ARGUMENT: bad sharding")
    mesh = type("M", (), {"shape": {"fsdp": 4}})()
    prog = Program(fn=None, args=(), rules=None, calls_per_video=1, notes=dict(tile=None))
    r = _does_not_fit(msg, "vae", "v5e:2x2", "TPU v5 lite", 4, mesh, prog, chip_spec("TPU v5 lite"), 1.0)
    assert r["fits"] is False and r["peak_bytes_per_device"] is None
    assert r["temp_bytes"] == int(52.93 * 2**30) and r["compile_error"] == msg
    sample = dict(calls_per_video=50, peak_bytes_per_device=12 * 2**30, fits=True, estimated_step_seconds=16.0)
    p = pipeline_summary({"sample": sample, "vae": r})
    assert p["peak_stage"] == "vae" and p["fits"] is False and p["estimated_video_seconds"] is None
    assert p["stages"]["sample"]["estimated_seconds"] == 800.0
