"""The Step-Video Video-VAE version 2 (`AutoencoderKL(version=2)` in the release) in Flax NNX.

Channels-last inside ([B, T, H, W, C]); `encode`/`decode` take and return the release's layouts
(video (b, f, 3, H, W) in [-1, 1], latents (b, f', z, H/16, W/16)), the `*_channels_last` variants
the sampler's [B, F, H, W, C]. Video is encoded in chunks of `frame_len` (17) frames, latents are
decoded in chunks of `latent_len` (3) frames -> 17 frames each and the frames on both sides of every
chunk boundary are mixed as released. Chunks run one after another inside one compiled program
(`lax.map`), so peak memory does not grow with the number of chunks.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from stepvideo_jax.sharding import constrain, enters_rules, model_shardings, use_mesh_rules
from stepvideo_jax.vae.config import VAEConfig
from stepvideo_jax.vae.layers import (
    AttentionBlock,
    CausalConv3d,
    FrameConv2d,
    FrameGroupNorm,
    ResnetBlock,
    UpsampleResBlock,
    channel_average,
    pixel_shuffle_3d,
    pixel_unshuffle_3d,
)
from stepvideo_jax.vae.sharding import VAE_SHARDING

__all__ = ["VideoVAE", "VideoEncoder", "VideoDecoder", "blend_chunk_boundaries", "tiled_map", "sharded_vae_decode"]


class _Mid(nnx.Module):
    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.block_1 = ResnetBlock(channels, channels, cfg, rngs=rngs)
        self.attn_1 = AttentionBlock(channels, cfg, rngs=rngs)
        self.block_2 = ResnetBlock(channels, channels, cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nnx.Module):
    """One resolution level: a list of residual blocks and an optional resampler."""

    def __init__(self, blocks: list[nnx.Module], resample: nnx.Module | None):
        self.block = nnx.List(blocks)
        self.resample = resample

    def __call__(self, x: jax.Array) -> jax.Array:
        for blk in self.block:
            x = blk(x)
        return x if self.resample is None else self.resample(x)


class _Downsample3D(nnx.Module):
    """Causal stride-2 conv in time and space."""

    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.conv = CausalConv3d(channels, channels, 3, cfg, stride=2, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class _Downsample2D(nnx.Module):
    """Per-frame stride-2 3x3 conv after one zero row at the bottom and one zero column on the right."""

    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.conv = FrameConv2d(channels, channels, cfg, stride=2, padding=((0, 1), (0, 1)), rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class _Upsample3D(nnx.Module):
    """Nearest 2x in time and space, then the residual 3D block."""

    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.conv3d = UpsampleResBlock(channels, cfg, rngs=rngs)

    def __call__(self, x):
        x = jnp.repeat(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), 2, axis=3)
        return self.conv3d(x)


class _Upsample2D(nnx.Module):
    """Nearest 2x in space, then a per-frame 3x3 conv."""

    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.conv = FrameConv2d(channels, channels, cfg, stride=1, padding=((1, 1), (1, 1)), rngs=rngs)

    def __call__(self, x):
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3))


class _ConvHolder(nnx.Module):
    """Holds the causal conv of a pixel-(un)shuffle layer under `.conv`, where the release keeps it."""

    def __init__(self, c_in: int, c_out: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.conv = CausalConv3d(c_in, c_out, 3, cfg, rngs=rngs)


class VideoEncoder(nnx.Module):
    """One chunk of frames [B, T, H, W, Cin] -> moments [B, T', H/s, W/s, 2z] ([mean | logvar])."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        ch, mult = cfg.encoder_ch, cfg.encoder_ch_mult
        self.conv_in = CausalConv3d(cfg.in_channels, ch, 3, cfg, rngs=rngs)
        levels, c_in = [], ch
        for i, m in enumerate(mult):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(c_in, ch * m, cfg, rngs=rngs))
                c_in = ch * m
            if i == len(mult) - 1:
                resample = None
            elif i in cfg.encoder_temporal_down_layers:
                resample = _Downsample3D(c_in, cfg, rngs=rngs)
            else:
                resample = _Downsample2D(c_in, cfg, rngs=rngs)
            levels.append(_Level(blocks, resample))
        self.down = nnx.List(levels)
        self.mid = _Mid(c_in, cfg, rngs=rngs)
        self.norm_out = FrameGroupNorm(c_in, cfg, rngs=rngs)
        self.conv_patchify = _ConvHolder(c_in, cfg.patch_channels // 8, cfg, rngs=rngs)
        self.conv_out = CausalConv3d(cfg.patch_channels, 2 * cfg.z_channels, 3, cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)  # [B, T', H/s*2, W/s*2, C]
        h = self.norm_out(h, silu=True)
        # Patchify: pixel-unshuffle (2x in t, h, w) of a conv, plus the channel-averaged unshuffle.
        shortcut = channel_average(pixel_unshuffle_3d(h, 2), cfg.patch_channels)
        h = pixel_unshuffle_3d(self.conv_patchify.conv(h), 2) + shortcut  # [B, T'', H/s, W/s, 32z]
        return self.conv_out(h) + channel_average(h, 2 * cfg.z_channels)


class VideoDecoder(nnx.Module):
    """One chunk of latents [B, t, h, w, z] -> frames [B, T, h*s, w*s, Cout]."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        ch, mult = cfg.decoder_ch, cfg.decoder_ch_mult
        c_in = cfg.decoder_width
        self.conv_in = CausalConv3d(cfg.z_channels, cfg.patch_channels, 3, cfg, rngs=rngs)
        self.conv_unpatchify = _ConvHolder(cfg.patch_channels, c_in * 8, cfg, rngs=rngs)
        self.mid = _Mid(c_in, cfg, rngs=rngs)
        levels: list[_Level | None] = [None] * len(mult)
        for i in reversed(range(len(mult))):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(c_in, ch * mult[i], cfg, rngs=rngs))
                c_in = ch * mult[i]
            if i == 0:
                resample = None
            elif i in cfg.decoder_temporal_up_layers:
                resample = _Upsample3D(c_in, cfg, rngs=rngs)
            else:
                resample = _Upsample2D(c_in, cfg, rngs=rngs)
            levels[i] = _Level(blocks, resample)
        self.up = nnx.List(levels)  # indexed by level, run from the last to the first
        self.norm_out = FrameGroupNorm(c_in, cfg, rngs=rngs)
        self.conv_out = CausalConv3d(c_in, cfg.out_channels, 3, cfg, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.cfg
        z = z.astype(cfg.jnp_dtype)
        # Unpatchify: conv + each latent channel duplicated, then pixel-shuffle of a conv + duplicated channels.
        h = self.conv_in(z) + jnp.repeat(z, cfg.patch_channels // cfg.z_channels, axis=-1)
        dup = jnp.repeat(h, cfg.decoder_width * 8 // cfg.patch_channels, axis=-1)
        h = pixel_shuffle_3d(self.conv_unpatchify.conv(h), 2) + pixel_shuffle_3d(dup, 2)  # [B, 2t-1, 2h, 2w, C]
        h = self.mid(h)
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)
        h = self.conv_out(self.norm_out(h, silu=True))
        return h[:, cfg.decoder_temporal_downsample - 1 :]


# -------------------------------------------------------------------------- chunking and tiling
def blend_chunk_boundaries(x: jax.Array, chunk_frames: int, keep: float) -> jax.Array:
    """The release's mix across chunk boundaries, [B, F, ...] with F a multiple of chunk_frames:
    with a the last frame of a chunk and b the first of the next, b <- keep*b + (1-keep)*a, then
    a <- keep*a + (1-keep)*b (the new b)."""
    b, f = x.shape[:2]
    n = f // chunk_frames
    if n < 2:
        return x
    x = x.reshape(b, n, chunk_frames, *x.shape[2:])
    last, first = x[:, :-1, -1], x[:, 1:, 0]
    first = first * keep + last * (1.0 - keep)
    last = last * keep + first * (1.0 - keep)
    x = x.at[:, 1:, 0].set(first).at[:, :-1, -1].set(last)
    return x.reshape(b, f, *x.shape[3:])


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def tiled_map(fn, x: jax.Array, tile: tuple[int, int], overlap: int, scale: int) -> jax.Array:
    """Applies `fn` ([B, T, h, w, C] -> [B, T', h*scale, w*scale, C']) on overlapping spatial tiles of
    x, one tile after another (`lax.scan`), and blends them with weights that ramp linearly across the
    overlap (tiles at the border of the image keep full weight there). A local `fn` is reproduced
    exactly; the VAE decoder (with its attention) only approximately."""
    b, t, h, w, _ = x.shape
    th, tw = min(tile[0], h), min(tile[1], w)
    if th == h and tw == w:
        return fn(x)
    starts = jnp.array([(i, j) for i in _tile_starts(h, th, overlap) for j in _tile_starts(w, tw, overlap)])
    ramp = max(overlap * scale, 1)

    def weights(start, n_tile, n_full):  # [n_tile*scale] linear ramps on the sides that touch another tile
        pos = jnp.arange(n_tile * scale)
        left = jnp.where(start == 0, jnp.inf, (pos + 1) / (ramp + 1))
        right = jnp.where(start + n_tile == n_full, jnp.inf, (n_tile * scale - pos) / (ramp + 1))
        return jnp.minimum(1.0, jnp.minimum(left, right))

    out_shape = jax.eval_shape(fn, jax.ShapeDtypeStruct((b, t, th, tw, x.shape[-1]), x.dtype))
    tf, c_out = out_shape.shape[1], out_shape.shape[-1]
    acc = jnp.zeros((b, tf, h * scale, w * scale, c_out), jnp.float32)
    norm = jnp.zeros((h * scale, w * scale), jnp.float32)

    def step(carry, start):
        acc, norm = carry
        i, j = start[0], start[1]
        y = fn(jax.lax.dynamic_slice(x, (0, 0, i, j, 0), (b, t, th, tw, x.shape[-1]))).astype(jnp.float32)
        wgt = weights(i, th, h)[:, None] * weights(j, tw, w)[None, :]  # [th*s, tw*s]
        cur = jax.lax.dynamic_slice(acc, (0, 0, i * scale, j * scale, 0), y.shape)
        acc = jax.lax.dynamic_update_slice(acc, cur + y * wgt[None, None, :, :, None], (0, 0, i * scale, j * scale, 0))
        cur_n = jax.lax.dynamic_slice(norm, (i * scale, j * scale), wgt.shape)
        norm = jax.lax.dynamic_update_slice(norm, cur_n + wgt, (i * scale, j * scale))
        return (acc, norm), None

    (acc, norm), _ = jax.lax.scan(step, (acc, norm), starts)
    return (acc / norm[None, None, :, :, None]).astype(out_shape.dtype)


def _map_chunks(fn, x: jax.Array, chunk: int, sequential: bool) -> jax.Array:
    """[B, n*chunk, ...] -> fn on each [B, chunk, ...] -> concatenated on frames. `sequential` runs the
    chunks one after another (`lax.map`); otherwise all at once as one batch."""
    b, f = x.shape[:2]
    n = f // chunk
    xs = x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)  # [n, B, chunk, ...]
    if sequential:
        ys = jax.lax.map(fn, xs)
    else:
        ys = fn(xs.reshape(n * b, chunk, *x.shape[2:]))
        ys = ys.reshape(n, b, *ys.shape[1:])
    return ys.swapaxes(0, 1).reshape(b, n * ys.shape[2], *ys.shape[3:])


@functools.partial(jax.jit, static_argnames=("graphdef", "sequential"))
def _encode_program(graphdef, state, video, *, sequential: bool):
    model = nnx.merge(graphdef, state)
    chunk = model.cfg.frame_len if video.shape[1] % model.cfg.frame_len == 0 else video.shape[1]
    return _map_chunks(model.encoder, video, chunk, sequential)


@functools.partial(jax.jit, static_argnames=("graphdef", "sequential", "tile", "overlap"))
def _decode_program(graphdef, state, latents, *, sequential: bool, tile, overlap: int):
    model = nnx.merge(graphdef, state)
    cfg = model.cfg
    chunk = cfg.latent_len if latents.shape[1] % cfg.latent_len == 0 else latents.shape[1]
    decode_all = lambda z: _map_chunks(model.decoder, z, chunk, sequential)
    if tile is None:
        x = decode_all(latents)
    else:
        x = tiled_map(decode_all, latents, tile, overlap, cfg.spatial_factor)
    return blend_chunk_boundaries(x, cfg.decoded_frames(chunk), cfg.blend_keep)


class VideoVAE(nnx.Module):
    SHARDING = VAE_SHARDING

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.encoder = VideoEncoder(cfg, rngs=rngs)
        self.decoder = VideoDecoder(cfg, rngs=rngs)

    # ------------------------------------------------------------------ checks
    def check_video_shape(self, shape: tuple[int, ...], *, channels_last: bool) -> None:
        cfg = self.cfg
        s, c = cfg.spatial_factor, cfg.in_channels
        form = f"(batch, frames, height, width, {c})" if channels_last else f"(batch, frames, {c}, height, width)"
        if len(shape) != 5 or shape[4 if channels_last else 2] != c:
            raise ValueError(f"video must be {form}; got {tuple(shape)}")
        f, h, w = (shape[1], shape[2], shape[3]) if channels_last else (shape[1], shape[3], shape[4])
        if not (f == 1 or (f > 0 and f % cfg.frame_len == 0)):
            raise ValueError(f"video frames must be 1 or a multiple of {cfg.frame_len}; got {f}")
        if h <= 0 or w <= 0 or h % s or w % s:
            raise ValueError(f"video height and width must be positive multiples of {s}; got {h}x{w}")

    def check_latent_shape(self, shape: tuple[int, ...], *, channels_last: bool) -> None:
        cfg = self.cfg
        z = cfg.z_channels
        form = f"(batch, frames, height, width, {z})" if channels_last else f"(batch, frames, {z}, height, width)"
        if len(shape) != 5 or shape[4 if channels_last else 2] != z or min(shape) <= 0:
            raise ValueError(f"latents must be {form}; got {tuple(shape)}")
        f = shape[1]
        if not (f == 1 or f % cfg.latent_len == 0):
            raise ValueError(f"latent frames must be 1 or a multiple of {cfg.latent_len}; got {f}")

    # ------------------------------------------------------------------ channels-last API
    @enters_rules(VAE_SHARDING)
    def encode_moments_channels_last(self, video: jax.Array, *, sequential: bool = True) -> jax.Array:
        """[B, F, H, W, Cin] in [-1, 1] -> [B, F', H/s, W/s, 2z] ([mean | logvar] on channels)."""
        self.check_video_shape(video.shape, channels_last=True)
        graphdef, state = nnx.split(self)
        return _encode_program(graphdef, state, jnp.asarray(video), sequential=sequential)

    def encode_channels_last(
        self, video: jax.Array, *, rng: jax.Array | None = None, sequential: bool = True
    ) -> jax.Array:
        """Latents [B, F', H/s, W/s, z]: a posterior sample when `rng` is a key (as the release), else the
        mean; times `cfg.latent_scale` (the moments are the VAE's own)."""
        moments = self.encode_moments_channels_last(video, sequential=sequential)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        if rng is None:
            return self._scaled(mean)
        std = jnp.exp(0.5 * jnp.clip(logvar, *self.cfg.logvar_clip))
        return self._scaled(mean + std * jax.random.normal(rng, mean.shape, mean.dtype))

    def _scaled(self, latents: jax.Array) -> jax.Array:
        return latents if self.cfg.latent_scale == 1.0 else latents * self.cfg.latent_scale

    def unscaled(self, latents: jax.Array) -> jax.Array:
        """Latents as `encode_channels_last` gives them -> the VAE's own (what `decoder` takes)."""
        return latents if self.cfg.latent_scale == 1.0 else latents / self.cfg.latent_scale

    @enters_rules(VAE_SHARDING)
    def decode_channels_last(
        self,
        latents: jax.Array,
        *,
        sequential: bool = True,
        tile: tuple[int, int] | None = None,
        overlap: int = 4,
    ) -> jax.Array:
        """[B, F', h, w, z] -> [B, F, h*s, w*s, Cout] (not clamped). `sequential` decodes the chunks one
        after another in one program; `tile=(th, tw)` (latent pixels) decodes overlapping spatial
        tiles one after another and blends them (approximate: attention sees one tile at a time)."""
        self.check_latent_shape(latents.shape, channels_last=True)
        if tile is not None:
            tile = (int(tile[0]), int(tile[1]))
            if min(tile) <= overlap or overlap < 0:
                raise ValueError(f"tile {tile} must be larger than overlap {overlap} >= 0 (latent pixels)")
        graphdef, state = nnx.split(self)
        latents = self.unscaled(jnp.asarray(latents))
        return _decode_program(graphdef, state, latents, sequential=sequential, tile=tile, overlap=overlap)

    # ------------------------------------------------------------------ release layouts
    def encode_moments(self, video: jax.Array, **kw) -> jax.Array:
        """(b, f, Cin, H, W) -> (b, f', 2z, H/s, W/s)."""
        self.check_video_shape(video.shape, channels_last=False)
        out = self.encode_moments_channels_last(jnp.transpose(video, (0, 1, 3, 4, 2)), **kw)
        return jnp.transpose(out, (0, 1, 4, 2, 3))

    def encode(self, video: jax.Array, *, rng: jax.Array | None = None, **kw) -> jax.Array:
        """(b, f, Cin, H, W) in [-1, 1] -> latents (b, f', z, H/s, W/s); sample when `rng` is given."""
        self.check_video_shape(video.shape, channels_last=False)
        out = self.encode_channels_last(jnp.transpose(video, (0, 1, 3, 4, 2)), rng=rng, **kw)
        return jnp.transpose(out, (0, 1, 4, 2, 3))

    def decode(self, latents: jax.Array, **kw) -> jax.Array:
        """(b, f', z, h, w) -> video (b, f, Cout, h*s, w*s)."""
        self.check_latent_shape(latents.shape, channels_last=False)
        out = self.decode_channels_last(jnp.transpose(latents, (0, 1, 3, 4, 2)), **kw)
        return jnp.transpose(out, (0, 1, 4, 2, 3))


def sharded_vae_decode(vae: VideoVAE, latents: jax.Array, mesh: Mesh) -> jax.Array:
    """``VideoVAE.decode_channels_last`` with its chunks of latent frames spread over the devices.

    latents [B, F', h, w, z] (F' a multiple of the VAE's chunk length) -> video [B, F, H, W, C]. The
    B x F'/chunk chunks are decoded as one batch sharded on ``chunk`` (padded with zero chunks up
    to a multiple of the devices it spreads over, then dropped), and the chunk boundaries blended as
    in the single-device decode. Weights are replicated (small).
    """
    rules = VAE_SHARDING
    cfg = vae.cfg
    vae.check_latent_shape(latents.shape, channels_last=True)
    chunk = cfg.latent_len if latents.shape[1] % cfg.latent_len == 0 else latents.shape[1]
    b, f = latents.shape[:2]
    n = b * (f // chunk)
    spread = math.prod(mesh.shape[a] for a in dict(rules.activations)["chunk"])
    n_pad = -n % spread
    graphdef, state = nnx.split(vae)
    state = jax.device_put(state, model_shardings(state, mesh, rules))

    def run(state, z):
        model = nnx.merge(graphdef, state)
        xs = z.reshape(b, f // chunk, chunk, *z.shape[2:]).reshape(n, chunk, *z.shape[2:])  # [n, chunk, h, w, z]
        xs = jnp.concatenate([xs, jnp.zeros((n_pad, *xs.shape[1:]), xs.dtype)]) if n_pad else xs
        xs = constrain(xs, ("chunk", None, None, None, None))
        ys = constrain(model.decoder(xs), ("chunk", None, None, None, None))[:n]  # [n, frames, H, W, C]
        ys = ys.reshape(b, (f // chunk) * ys.shape[1], *ys.shape[2:])
        return blend_chunk_boundaries(ys, cfg.decoded_frames(chunk), cfg.blend_keep)

    with use_mesh_rules(mesh, rules):
        return jax.jit(run)(state, vae.unscaled(latents))
