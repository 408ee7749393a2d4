"""Peak memory of `chunked` vs `xla` self-attention at 4k, 8k and 16k tokens on this machine.

    .venv/bin/python benchmarks/attention_memory.py [--heads 2] [--head-dim 64] [--no-run]

Two figures per case: XLA's planned temporary bytes of the compiled program (`memory_analysis()`,
exact for the buffer assignment) and, unless --no-run, the measured peak resident memory of a fresh
process that runs it once (max RSS minus the RSS with the inputs in place). `xla` materialises the
[H, N, N] float32 logits (quadratic); `chunked` keeps one [H, q_block, kv_block] tile (linear).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MiB = 1024**2


def _child(kernel: str, tokens: int, heads: int, head_dim: int, run: bool) -> dict:
    import resource

    import jax
    import jax.numpy as jnp

    from stepvideo_jax.attention import dot_product_attention

    shape = (1, tokens, heads, head_dim)
    q, k, v = (jax.random.normal(jax.random.key(i), shape, jnp.float32) for i in range(3))
    fn = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, kernel=kernel))
    compiled = fn.lower(q, k, v).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    out = {"kernel": kernel, "tokens": tokens, "temp_bytes": int(temp)}
    if run:
        jax.block_until_ready((q, k, v))
        base = _rss_bytes()
        compiled(q, k, v).block_until_ready()
        out["peak_rss_delta_bytes"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    return out


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", default="4096,8192,16384")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--no-run", action="store_true", help="only the compiled temp bytes (no execution)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        kernel, tokens = a.child.split(":")
        print(json.dumps(_child(kernel, int(tokens), a.heads, a.head_dim, not a.no_run)))
        return 0
    rows = []
    for tokens in (int(t) for t in a.tokens.split(",")):
        for kernel in ("xla", "chunked"):
            cmd = [
                sys.executable,
                __file__,
                f"--child={kernel}:{tokens}",
                f"--heads={a.heads}",
                f"--head-dim={a.head_dim}",
            ]
            cmd += ["--no-run"] if a.no_run else []
            env = dict(os.environ, JAX_PLATFORMS="cpu")
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"self-attention, batch 1, {a.heads} heads x {a.head_dim}, float32, CPU")
    print(f"{'tokens':>7} {'kernel':>8} {'XLA temp MiB':>13} {'peak RSS MiB':>13}")
    for r in rows:
        rss = r.get("peak_rss_delta_bytes")
        print(
            f"{r['tokens']:>7} {r['kernel']:>8} {r['temp_bytes'] / MiB:>13.1f} {('-' if rss is None else f'{rss / MiB:.1f}'):>13}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
