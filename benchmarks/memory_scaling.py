"""Memory scaling with tokens: `chunked` attention alone and one DiT layer (with `chunked` attention)
at 4k, 8k, 16k and 32k tokens, from XLA's buffer assignment of the compiled program.

    python -m benchmarks.memory_scaling

Figures are `compile().memory_analysis()` bytes (temporaries + arguments + outputs) of a forward,
abstract inputs, float32, 2 heads x 128 (layer width 256, FFN 1024), 64 text tokens. Target: doubling
the tokens costs at most 2.2x memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.common import fmt_bytes, md_table
from stepvideo_jax.attention import dot_product_attention
from stepvideo_jax.dit import DiTConfig
from stepvideo_jax.dit.blocks import DiTBlock
from stepvideo_jax.dit.rope import rope_tables

TOKENS = (4096, 8192, 16384, 32768)


def _bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def attention_bytes(n: int, heads: int = 2, head_dim: int = 128) -> int:
    q = jax.ShapeDtypeStruct((1, n, heads, head_dim), jnp.float32)
    f = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, kernel="chunked"))
    return _bytes(f.lower(q, q, q).compile())


def layer_bytes(n: int) -> int:
    cfg = DiTConfig(
        num_heads=2,
        head_dim=128,
        num_layers=1,
        in_channels=16,
        out_channels=16,
        caption_channels=(64, 32),
        attention_kernel="chunked",
    )
    abstract = nnx.eval_shape(lambda: DiTBlock(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    d = cfg.hidden_size

    def fwd(state, x, ctx, mod, pos):
        cos, sin = rope_tables(pos, cfg.rope_split, cfg.rope_base)
        return nnx.merge(graphdef, state)(x, ctx, jnp.ones(ctx.shape[:2], bool), mod, cos, sin)

    args = (
        jax.ShapeDtypeStruct((1, n, d), jnp.float32),
        jax.ShapeDtypeStruct((1, 64, d), jnp.float32),
        jax.ShapeDtypeStruct((1, 6, d), jnp.float32),
        jax.ShapeDtypeStruct((n, 3), jnp.int32),
    )
    return _bytes(jax.jit(fwd).lower(state, *args).compile())


def main() -> None:
    rows, worst = [], {"chunked attention": 0.0, "DiT layer": 0.0}
    prev = {}
    for n in TOKENS:
        row = [n]
        for name, fn in (("chunked attention", attention_bytes), ("DiT layer", layer_bytes)):
            b = fn(n)
            ratio = b / prev[name] if name in prev else None
            if ratio:
                worst[name] = max(worst[name], ratio)
            prev[name] = b
            row += [fmt_bytes(b), f"{ratio:.2f}x" if ratio else ""]
        rows.append(row)
    print(md_table(["tokens", "chunked attention", "x per doubling", "DiT layer (chunked)", "x per doubling"], rows))
    for name, r in worst.items():
        print(f"\n{name}: worst growth per doubling {r:.2f}x (target <= 2.2x): {'met' if r <= 2.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
