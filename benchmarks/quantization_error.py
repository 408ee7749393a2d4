"""Weight-only quantization error of the DiT at the released width: output with int8 / fp8 (e4m3)
weights (per-output-channel scales, float32 activations) vs the float32 model, and bf16 weights as the
yardstick (what the release ships).

    python -m benchmarks.quantization_error                 # 6144 wide, 48 heads, 2 layers, seed 0
    python -m benchmarks.quantization_error --layers=1 --frames=3 --size=8

The weights are random with a fixed seed, drawn as `pipeline.random_model` draws them: N(0, 1/fan_in)
for every kernel (the variance of PyTorch's default `nn.Linear` init times 3), biases 0, norm scales
1, and the scale-shift tables N(0, 1/D) as the release initialises them. The inputs are N(0, 1)
latents and text states, timestep 0.5, motion score 5. Float32 weights are ~6.4 GB at two layers; the
models are built and dropped one at a time.
"""

from __future__ import annotations

import argparse
import gc
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import md_table
from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.quantize import quantize_model
from stepvideo_jax.testing import random_model


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _forward(model, inputs):
    return np.asarray(nnx.jit(lambda m, kw: m.forward(**kw))(model, inputs))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=48)
    p.add_argument("--frames", type=int, default=3, help="latent frames")
    p.add_argument("--size", type=int, default=8, help="latent height = width")
    p.add_argument("--text_tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cfg = DiTConfig(num_heads=args.heads, num_layers=args.layers, param_dtype="float32", dtype="float32")
    rng = np.random.default_rng(args.seed + 1)
    b, c = 2, cfg.in_channels
    inputs = dict(
        latents=jnp.asarray(rng.normal(size=(b, args.frames, args.size, args.size, c)), jnp.float32),
        timestep=jnp.full((b,), 0.5, jnp.float32),
        llm_states=jnp.asarray(rng.normal(size=(b, args.text_tokens, cfg.caption_channels[0])), jnp.float32),
        text_mask=jnp.ones((b, 77 + args.text_tokens), jnp.int32),
        clip_states=jnp.asarray(rng.normal(size=(b, 77, cfg.caption_channels[1])), jnp.float32),
        condition=jnp.asarray(rng.normal(size=(b, args.frames, args.size, args.size, c)), jnp.float32),
        motion_score=5.0,
    )
    t0 = time.perf_counter()
    model = random_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), args.seed)
    n_params = sum(int(v.get_value().size) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    reference = _forward(model, inputs)
    rows = []
    for mode in ("int8", "fp8"):
        q = quantize_model(model, mode)
        nbytes = sum(int(v.get_value().nbytes) for _, v in nnx.to_flat_state(nnx.state(q, nnx.Param)))
        rows.append(
            [
                f"{mode} weights, float32 activations",
                f"{rel_l2(_forward(q, inputs), reference):.2e}",
                f"{nbytes / 2**30:.2f}",
            ]
        )
        del q
        gc.collect()
    graphdef, state = nnx.split(model)
    del model
    gc.collect()
    state = jax.tree.map(lambda a: a.astype(jnp.bfloat16), state)
    bf16 = nnx.merge(graphdef, state)
    nbytes = sum(int(v.get_value().nbytes) for _, v in nnx.to_flat_state(nnx.state(bf16, nnx.Param)))
    rows.append(
        [
            "bf16 weights, float32 activations (yardstick)",
            f"{rel_l2(_forward(bf16, inputs), reference):.2e}",
            f"{nbytes / 2**30:.2f}",
        ]
    )
    print(
        f"DiT {cfg.hidden_size} wide, {cfg.num_heads} heads, {cfg.num_layers} layers "
        f"({n_params / 1e9:.2f} B parameters, seed {args.seed}); input [2, {args.frames}, {args.size}, {args.size}, {c}] latents "
        f"({args.frames * args.size * args.size} tokens), {args.text_tokens} LLM + 77 CLIP tokens; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print()
    print(md_table(["weights", "output rel L2 vs float32", "parameter GiB"], rows))


if __name__ == "__main__":
    main()
