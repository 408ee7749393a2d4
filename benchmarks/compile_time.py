"""First-call compile time of the DiT at the real 48-layer depth (small width): `nnx.scan` vs unrolled.

    python -m benchmarks.compile_time

Width 2 heads x 128, 2x8x8 latents. Compile time is `jit(...).lower(...).compile()` wall seconds
(lowering included), median of 3 fresh compiles per row. Target: the scanned model's compile time
is independent of depth within 1.5x between 8 and 48 layers.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.common import md_table
from stepvideo_jax.dit import DiTConfig, StepVideoDiT


def _compile_seconds(layers: int, scan: bool, repeats: int = 3) -> float:
    cfg = DiTConfig(
        num_heads=2,
        head_dim=128,
        num_layers=layers,
        in_channels=16,
        out_channels=16,
        caption_channels=(64, 32),
        scan_layers=scan,
        attention_kernel="xla",
    )
    abstract = nnx.eval_shape(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    x = jax.ShapeDtypeStruct((2, 2, 8, 8, 16), jnp.float32)
    args = (
        x,
        jax.ShapeDtypeStruct((2,), jnp.float32),
        jax.ShapeDtypeStruct((2, 16, 64), jnp.float32),
        jax.ShapeDtypeStruct((2, 24), jnp.float32),
        jax.ShapeDtypeStruct((2, 8, 32), jnp.float32),
        x,
    )

    def fwd(state, x, t, llm, mask, clip, cond):
        return nnx.merge(graphdef, state).forward(x, t, llm, mask, clip, cond, 5.0)

    times = []
    for _ in range(repeats):
        jax.clear_caches()
        t0 = time.perf_counter()
        jax.jit(fwd).lower(state, *args).compile()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    rows, scan_times = [], {}
    for layers in (8, 16, 48):
        s = _compile_seconds(layers, True)
        u = _compile_seconds(layers, False)
        scan_times[layers] = s
        rows.append([layers, f"{s:.2f}", f"{u:.2f}", f"{u / s:.1f}x"])
    print(md_table(["layers", "scan compile s", "unrolled compile s", "unrolled / scan"], rows))
    ratio = scan_times[48] / scan_times[8]
    print(f"\nscan compile time 48 vs 8 layers: {ratio:.2f}x (target <= 1.5x): {'met' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
