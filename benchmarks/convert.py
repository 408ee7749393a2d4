"""Peak host memory and throughput of `convert_torch_weights.py` on a generated multi-shard checkpoint.

    .venv/bin/python benchmarks/convert.py [--size_gb=1.2] [--shards=4] [--src_dtype=bfloat16] [--dtype=bfloat16]

Writes a released-layout `transformer/` folder (config.json, N safetensors shards + index) with random
weights of a DiT sized to about `size_gb` into a temporary folder under /tmp, converts it in a child
process, and prints one table row: peak RSS of the child (from `os.wait4`), the RSS of a child that
only imports the converter stack, output bytes, their ratios, and GB/s (source bytes / wall time of
the whole child, hashing included; also per CPU-second, which a shared machine's load distorts
less). Everything it wrote is deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_SIZE = flags.DEFINE_float("size_gb", 1.2, "Approximate size of the generated source checkpoint (GB, 1e9 bytes).")
_SHARDS = flags.DEFINE_integer("shards", 4, "Number of safetensors shards.")
_SRC_DTYPE = flags.DEFINE_enum("src_dtype", "bfloat16", ["bfloat16", "float32"], "dtype stored in the source.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "dtype written by the converter.")
_WIDTH = flags.DEFINE_integer("heads", 16, "Attention heads of the generated DiT (x 128 wide).")
_TMP = flags.DEFINE_string("tmp", "/tmp", "Where the generated checkpoint and the output go.")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate_release(root: str, size_gb: float, shards: int, src_dtype: str, heads: int) -> int:
    """Writes `root/transformer/` with random weights; returns its byte size."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    itemsize = 2 if src_dtype == "bfloat16" else 4
    D = heads * 128
    layers = max(1, round(size_gb * 1e9 / itemsize / (16 * D * D)) - 1)
    cfg = {
        "num_attention_heads": heads,
        "attention_head_dim": 128,
        "in_channels": 64,
        "out_channels": 64,
        "num_layers": layers,
        "dropout": 0.0,
        "patch_size": 1,
        "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "use_additional_conditions": True,
        "caption_channels": [4096, 1024],
    }
    from stepvideo_jax.convert.dit import release_dit_shapes
    from stepvideo_jax.dit import DiTConfig

    shapes = release_dit_shapes(DiTConfig.from_release(cfg))
    total = sum(int(np.prod(s)) for s in shapes.values()) * itemsize
    folder = os.path.join(root, "transformer")
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    rng = np.random.default_rng(0)
    dtype = ml_dtypes.bfloat16 if src_dtype == "bfloat16" else np.float32
    weight_map, shard, shard_bytes, n = {}, {}, 0, 0
    names = [f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    for key, shape in shapes.items():
        shard[key] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)
        shard_bytes += shard[key].nbytes
        if shard_bytes >= total / shards and n < shards - 1:
            save_file(shard, os.path.join(folder, names[n]))
            weight_map.update({k: names[n] for k in shard})
            shard, shard_bytes, n = {}, 0, n + 1
    save_file(shard, os.path.join(folder, names[n]))
    weight_map.update({k: names[n] for k in shard})
    with open(os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return total


def _run_child(cmd: list[str]) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS bytes, output, CPU seconds) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}")
    return wall, usage.ru_maxrss * 1024, out, usage.ru_utime + usage.ru_stime  # ru_maxrss is KiB on Linux


def main(argv):
    del argv
    work = tempfile.mkdtemp(prefix="stepvideo-convert-bench-", dir=_TMP.value)
    try:
        src, dst = os.path.join(work, "release"), os.path.join(work, "converted")
        t = time.perf_counter()
        src_bytes = generate_release(src, _SIZE.value, _SHARDS.value, _SRC_DTYPE.value, _WIDTH.value)
        print(
            f"generated {src_bytes / 1e9:.2f} GB in {_SHARDS.value} shards ({_SRC_DTYPE.value}) in {time.perf_counter() - t:.0f}s"
        )
        py = sys.executable
        _, base_rss, _, _ = _run_child(
            [py, "-c", "import stepvideo_jax.convert.release, orbax.checkpoint, jax; jax.numpy.zeros(1)"]
        )
        wall, rss, out, cpu = _run_child(
            [
                py,
                "convert_torch_weights.py",
                f"--src={src}",
                f"--dst={dst}",
                "--components=transformer",
                f"--dtype={_DTYPE.value}",
            ]
        )
        print(out.strip().splitlines()[-2] if out.strip() else "")
        with open(os.path.join(dst, "manifest.json")) as f:
            out_bytes = json.load(f)["components"]["transformer"]["bytes"]
        rows = [
            ("source", f"{src_bytes / 1e9:.2f} GB {_SRC_DTYPE.value}"),
            ("output", f"{out_bytes / 1e9:.2f} GB {_DTYPE.value}"),
            ("peak RSS", f"{rss / 1e9:.2f} GB"),
            ("import-only RSS", f"{base_rss / 1e9:.2f} GB"),
            ("peak RSS / output", f"{rss / out_bytes:.3f}"),
            ("(peak - import RSS) / output", f"{(rss - base_rss) / out_bytes:.3f}"),
            ("wall time", f"{wall:.1f} s"),
            ("CPU time (user + sys)", f"{cpu:.1f} s"),
            ("throughput", f"{src_bytes / 1e9 / wall:.3f} GB/s (source bytes / wall)"),
            ("throughput per CPU-second", f"{src_bytes / 1e9 / cpu:.3f} GB/s (source bytes / CPU time)"),
        ]
        width = max(len(r[0]) for r in rows)
        print("| " + "metric".ljust(width) + " | value |")
        print("|" + "-" * (width + 2) + "|-------|")
        for k, v in rows:
            print(f"| {k.ljust(width)} | {v} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
