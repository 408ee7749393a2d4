"""Tiny-config training on the CPU: fixed-batch loss drop, step time, XLA FLOPs (prints a table).

    python benchmarks/train_tiny.py --steps 300 [--devices 8]

Fixed batch, fixed t / noise / caption dropout (``fixed_noise``): the loss must fall by >= 10x.
"""

import argparse
import os
import statistics
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--devices", type=int, default=1, help="simulated CPU devices (FSDP over all)")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import numpy as np  # noqa: E402

from stepvideo_jax.config import dataclass_from  # noqa: E402
from stepvideo_jax.configs import get_config  # noqa: E402
from stepvideo_jax.dit import DIT_SHARDING, DiTConfig, StepVideoDiT  # noqa: E402
from stepvideo_jax.sharding import MeshConfig, make_mesh  # noqa: E402
from stepvideo_jax.training import ObjectiveConfig, OptimConfig, Trainer  # noqa: E402

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
cfg = get_config("train_ti2v:tiny")
dit = dataclass_from(DiTConfig, cfg.model)
trainer = Trainer(
    lambda rngs: StepVideoDiT(dit, rngs=rngs),
    dataclass_from(OptimConfig, cfg.optim),
    dataclass_from(ObjectiveConfig, cfg.objective),
    make_mesh(MeshConfig(fsdp=-1)),
    DIT_SHARDING,
)
b, c = cfg.data.batch_size * args.devices, dit.in_channels
r = np.random.default_rng(0)
batch = dict(
    latents=r.standard_normal((b, 3, 2, 2, c), np.float32),
    condition=r.standard_normal((b, 1, 2, 2, c), np.float32),
    llm_states=r.standard_normal((b, 8, dit.caption_channels[0]), np.float32),
    llm_mask=np.tile((np.arange(8) < 5).astype(np.int32), (b, 1)),
    clip_states=r.standard_normal((b, 5, dit.caption_channels[1]), np.float32),
    motion_score=np.linspace(1, 8, b).astype(np.float32),
)
null = dict(
    llm_states=np.zeros((8, dit.caption_channels[0]), np.float32),
    llm_mask=(np.arange(8) < 1).astype(np.int32),
    clip_states=np.zeros((5, dit.caption_channels[1]), np.float32),
)
t0 = time.perf_counter()
state = trainer.init_state(0)
bd, nd = trainer.device_batch(batch), trainer.device_replicated(null)
flops = trainer.step_flops(state, bd, nd)
compile_s = time.perf_counter() - t0
losses, times = [], []
for _ in range(args.steps):
    t = time.perf_counter()
    state, m = trainer.step(state, bd, nd, fixed_noise=True)
    losses.append(float(m["loss"]))
    times.append(time.perf_counter() - t)
med = statistics.median(times)
rows = [
    ("devices", args.devices),
    ("global batch", b),
    ("init + compile s", f"{compile_s:.1f}"),
    ("loss step 0", f"{losses[0]:.4g}"),
    ("loss step 100", f"{losses[min(100, len(losses) - 1)]:.4g}"),
    (f"loss step {len(losses) - 1}", f"{losses[-1]:.4g}"),
    ("drop (first / last)", f"{losses[0] / losses[-1]:.3g}x"),
    ("median step ms", f"{med * 1e3:.2f}"),
    ("examples/s", f"{b / med:.1f}"),
    ("XLA flops per step (per device)", f"{flops:.3g}"),
    ("TFLOP/s per device", f"{flops / med / 1e12:.4f}"),
]
width = max(len(k) for k, _ in rows)
print(f"{'metric':<{width}} | value", file=sys.stdout)
print("-" * (width + 12))
for k, v in rows:
    print(f"{k:<{width}} | {v}")
