"""Video-VAE v2: encode/decode seconds per frame and peak memory on this machine, and the compiled
temp memory of decoding the release's default video (102 frames at 544x992) with the real widths.

    python benchmarks/vae.py                       # both tables, default sizes
    python benchmarks/vae.py --skip-timing         # only the memory-analysis table
    python benchmarks/vae.py --config real --frames 17 --height 64 --width 64

The memory table comes from `jax.jit(...).lower(abstract inputs).compile().memory_analysis()`, so it
costs compile time only (no weights, no activations): "sequential" decodes the 6 chunks one after
another in one program (`lax.map`), "all chunks at once" batches them (no chunking), "tiled" adds
spatial tiling (tile and overlap in latent pixels).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import jax
import numpy as np
from flax import nnx

from stepvideo_jax.vae import VAEConfig, VideoVAE
from stepvideo_jax.vae.model import _decode_program, _encode_program

GiB = 1024**3


def _peak_bytes() -> tuple[str, int]:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return "device peak", int(stats["peak_bytes_in_use"])
    return "process max RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def timing(cfg: VAEConfig, frames: int, height: int, width: int, repeats: int) -> None:
    model = VideoVAE(cfg, rngs=nnx.Rngs(0))
    video = jax.random.uniform(jax.random.key(0), (1, frames, height, width, cfg.in_channels), minval=-1, maxval=1)
    rows = []
    t0 = time.perf_counter()
    latents = model.encode_channels_last(video).block_until_ready()
    compile_enc = time.perf_counter() - t0
    enc = _median_seconds(lambda: model.encode_channels_last(video).block_until_ready(), repeats)
    t0 = time.perf_counter()
    out = model.decode_channels_last(latents).block_until_ready()
    compile_dec = time.perf_counter() - t0
    dec = _median_seconds(lambda: model.decode_channels_last(latents).block_until_ready(), repeats)
    rows.append(("encode", tuple(video.shape), tuple(latents.shape), compile_enc, enc, enc / frames))
    rows.append(("decode", tuple(latents.shape), tuple(out.shape), compile_dec, dec, dec / out.shape[1]))
    kind, peak = _peak_bytes()
    print(
        f"\n## Timing on {jax.devices()[0].device_kind} ({jax.default_backend()}), widths "
        f"enc {cfg.encoder_ch}x{cfg.encoder_ch_mult} dec {cfg.decoder_ch}x{cfg.decoder_ch_mult} z {cfg.z_channels}"
    )
    print(f"conv_impl {cfg.conv_impl!r} (frame_taps on CPU); s/call: median of {repeats} calls after the first\n")
    print(f"{'op':8s} {'input (B,F,H,W,C)':24s} {'output':24s} {'first call s':>12s} {'s/call':>9s} {'s/frame':>9s}")
    for name, i, o, c, s, spf in rows:
        print(f"{name:8s} {str(i):24s} {str(o):24s} {c:12.2f} {s:9.3f} {spf:9.4f}")
    print(f"peak memory ({kind}): {peak / GiB:.2f} GiB")
    if (height, width) != (544, 992):
        scale = 544 * 992 / (height * width)
        print(
            f"\nProjection (not measured), 544x992 on this machine: the convolutions scale with pixels, so "
            f"encode ~{enc / frames * scale:.1f} s/frame and decode ~{dec / out.shape[1] * scale:.1f} s/frame "
            f"({scale:.1f}x the pixels); decoding a 544x992 chunk needs the spatial tiles of the table below "
            f"to fit in this machine's 24 GB (31.5 GiB of temporaries untiled)."
        )


def memory_table(frames: int, height: int, width: int, tile: tuple[int, int], overlap: int, dtype: str) -> None:
    # The 3D-conv path, as TPUs and GPUs run it (the CPU's per-tap path keeps more temporaries alive).
    cfg = VAEConfig.real(param_dtype=dtype, dtype=dtype, conv_impl="conv3d")
    abstract = nnx.eval_shape(lambda: VideoVAE(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    s = cfg.spatial_factor
    lat_frames = frames // cfg.frame_len * cfg.latent_len
    latents = jax.ShapeDtypeStruct((1, lat_frames, height // s, width // s, cfg.z_channels), cfg.jnp_dtype)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
    print(
        f"\n## Compiled memory, real widths ({params / 1e6:.1f}M params, {dtype}, conv3d), decode latents "
        f"{tuple(latents.shape)} -> {frames}x{height}x{width} ({jax.default_backend()} compiler)"
    )
    print(f"{'mode':34s} {'temp GiB':>9s} {'args GiB':>9s} {'out GiB':>9s} {'compile s':>10s}")
    modes = [
        ("sequential chunks (lax.map)", dict(sequential=True, tile=None)),
        ("all chunks at once (no chunking)", dict(sequential=False, tile=None)),
        (f"sequential + tiles {tile} ov {overlap}", dict(sequential=True, tile=tile)),
    ]
    two_chunks = jax.ShapeDtypeStruct((1, 2 * cfg.latent_len, *latents.shape[2:]), latents.dtype)
    modes.append(("sequential, 2 chunks only (34 fr)", dict(sequential=True, tile=None, z=two_chunks)))
    for name, kw in modes:
        z = kw.pop("z", latents)
        t0 = time.perf_counter()
        compiled = _decode_program.lower(graphdef, state, z, overlap=overlap, **kw).compile()
        mem = compiled.memory_analysis()
        dt = time.perf_counter() - t0
        print(
            f"{name:34s} {mem.temp_size_in_bytes / GiB:9.2f} {mem.argument_size_in_bytes / GiB:9.2f} "
            f"{mem.output_size_in_bytes / GiB:9.2f} {dt:10.1f}",
            flush=True,
        )
    image = jax.ShapeDtypeStruct((1, 1, height, width, cfg.in_channels), cfg.jnp_dtype)
    t0 = time.perf_counter()
    mem = _encode_program.lower(graphdef, state, image, sequential=True).compile().memory_analysis()
    print(
        f"{'encode one image ' + str((height, width)):34s} {mem.temp_size_in_bytes / GiB:9.2f} "
        f"{mem.argument_size_in_bytes / GiB:9.2f} {mem.output_size_in_bytes / GiB:9.2f} {time.perf_counter() - t0:10.1f}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=("tiny", "real"), default="tiny", help="widths for the timing table")
    p.add_argument("--frames", type=int, default=34)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--mem-frames", type=int, default=102)
    p.add_argument("--mem-height", type=int, default=544)
    p.add_argument("--mem-width", type=int, default=992)
    p.add_argument("--tile", type=int, nargs=2, default=(18, 32), help="latent tile (h, w) for the tiled row")
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--mem-dtype", choices=("float32", "bfloat16"), default="float32", help="params and compute")
    a = p.parse_args(argv)
    if not a.skip_timing:
        cfg = VAEConfig.tiny() if a.config == "tiny" else VAEConfig.real()
        timing(cfg, a.frames, a.height, a.width, a.repeats)
    if not a.skip_memory:
        memory_table(a.mem_frames, a.mem_height, a.mem_width, tuple(a.tile), a.overlap, a.mem_dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
