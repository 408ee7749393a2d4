"""Building blocks of the Video-VAE v2, channels-last: video tensors are [B, T, H, W, C].

Every 3x3x3 conv of the release is causal in time: two zero frames in front, none behind, and one
zero pixel on each side in space (``CausalConv``, ``CausalConvAfterNorm`` after the norm + SiLU, and
``CausalConvChannelLast`` all reduce to that). GroupNorm is computed per frame in version 2.

Logical axis names: conv kernels (kt, kh, kw, in, out) carry (None, None, None, "conv_in", "conv_out"),
2D kernels (None, None, "conv_in", "conv_out"), conv biases ("conv_out",); GroupNorm scale/bias
are unnamed (replicated). The VAE is small (~0.5B params) and is normally replicated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stepvideo_jax.layers import NORM_DTYPE, logical
from stepvideo_jax.vae.config import VAEConfig

__all__ = [
    "CausalConv3d",
    "FrameConv2d",
    "FrameGroupNorm",
    "ResnetBlock",
    "AttentionBlock",
    "UpsampleResBlock",
    "causal_attention",
    "pixel_shuffle_3d",
    "pixel_unshuffle_3d",
    "channel_average",
]

_HIGHEST = jax.lax.Precision.HIGHEST


def _param(rngs: nnx.Rngs, init, shape, dtype, names) -> nnx.Param:
    return nnx.Param(logical(init, names)(rngs.params(), shape, dtype))


class CausalConv3d(nnx.Module):
    """3D conv, zero padding (kt-1) frames in front only and k//2 pixels on each spatial side."""

    def __init__(self, c_in: int, c_out: int, kernel: int, cfg: VAEConfig, *, stride: int = 1, rngs: nnx.Rngs):
        self.kernel_size, self.stride = kernel, stride
        self.dtype = cfg.jnp_dtype
        self.conv_impl = cfg.conv_impl
        pdt = cfg.jnp_param_dtype
        self.kernel = _param(
            rngs,
            nnx.initializers.lecun_normal(),
            (kernel,) * 3 + (c_in, c_out),
            pdt,
            (None, None, None, "conv_in", "conv_out"),
        )
        self.bias = _param(rngs, nnx.initializers.zeros_init(), (c_out,), pdt, ("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, Cin] -> [B, T', H', W', Cout]
        k, s = self.kernel_size, self.stride
        x = x.astype(self.dtype)
        w = self.kernel[...].astype(self.dtype)
        if k == 1 and s == 1:
            y = jnp.einsum("bthwc,cd->bthwd", x, w[0, 0, 0], precision=_HIGHEST)
        elif _use_frame_taps(self.conv_impl):
            y = _causal_conv_frame_taps(x, w, s)
        else:
            # Padding inside the conv: no padded copy of the (largest) activations is materialised.
            pad = ((k - 1, 0), (k // 2, k // 2), (k // 2, k // 2))
            y = jax.lax.conv_general_dilated(
                x,
                w,
                (s, s, s),
                pad,
                dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                precision=_HIGHEST,
            )
        return y + self.bias[...].astype(self.dtype)


def _use_frame_taps(conv_impl: str) -> bool:
    if conv_impl == "auto":  # the platform compiled for (a mesh of compile-only TPU devices is TPU)
        from stepvideo_jax.attention import target_platform

        return target_platform() == "cpu"
    return conv_impl == "frame_taps"


def _causal_conv_frame_taps(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """The causal 3D conv as a sum over its kt temporal taps of per-frame 2D convs.

    x [B, T, H, W, Cin], w [kt, kh, kw, Cin, Cout]; output frame t' reads input frames
    s*t' - (kt-1) + i for tap i (zeros before frame 0), exactly as the padded 3D conv does."""
    kt, kh, kw = w.shape[:3]
    b, t, h, wd, c = x.shape
    t_out = (t - 1) // stride + 1
    xp = jnp.pad(x, ((0, 0), (kt - 1, 0), (0, 0), (0, 0), (0, 0)))  # [B, T+kt-1, H, W, Cin]
    y = None
    for i in range(kt):
        if i + stride * (t_out - 1) < kt - 1:
            continue  # this tap reads front padding only (e.g. a one-frame image): it adds zeros
        xi = xp[:, i : i + stride * (t_out - 1) + 1 : stride]  # [B, T', H, W, Cin]
        yi = jax.lax.conv_general_dilated(
            xi.reshape(b * t_out, h, wd, c),
            w[i],
            (stride, stride),
            ((kh // 2, kh // 2), (kw // 2, kw // 2)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=_HIGHEST,
        )
        y = yi if y is None else y + yi
    return y.reshape(b, t_out, *y.shape[1:])


class FrameConv2d(nnx.Module):
    """A 2D conv applied to every frame; `padding` is ((top, bottom), (left, right))."""

    def __init__(self, c_in: int, c_out: int, cfg: VAEConfig, *, stride: int, padding, rngs: nnx.Rngs):
        self.stride, self.padding = stride, tuple(tuple(p) for p in padding)
        self.dtype = cfg.jnp_dtype
        pdt = cfg.jnp_param_dtype
        self.kernel = _param(
            rngs, nnx.initializers.lecun_normal(), (3, 3, c_in, c_out), pdt, (None, None, "conv_in", "conv_out")
        )
        self.bias = _param(rngs, nnx.initializers.zeros_init(), (c_out,), pdt, ("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, Cin]
        b, t, h, w, c = x.shape
        y = jax.lax.conv_general_dilated(
            x.reshape(b * t, h, w, c).astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=_HIGHEST,
        )
        y = y + self.bias[...].astype(self.dtype)
        return y.reshape(b, t, *y.shape[1:])


class FrameGroupNorm(nnx.Module):
    """GroupNorm over (channels in group, H, W) of each frame separately; statistics in float32."""

    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.groups, self.eps = cfg.norm_groups, cfg.norm_eps
        pdt = cfg.jnp_param_dtype
        self.scale = _param(rngs, nnx.initializers.ones_init(), (channels,), pdt, (None,))
        self.bias = _param(rngs, nnx.initializers.zeros_init(), (channels,), pdt, (None,))

    def __call__(self, x: jax.Array, silu: bool = False) -> jax.Array:  # [B, T, H, W, C]
        b, t, h, w, c = x.shape
        xf = x.astype(NORM_DTYPE).reshape(b, t, h, w, self.groups, c // self.groups)
        mean = jnp.mean(xf, axis=(2, 3, 5), keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=(2, 3, 5), keepdims=True)
        y = ((xf - mean) * jax.lax.rsqrt(var + self.eps)).reshape(b, t, h, w, c)
        y = y * self.scale[...].astype(NORM_DTYPE) + self.bias[...].astype(NORM_DTYPE)
        if silu:
            y = jax.nn.silu(y)
        return y.astype(x.dtype)


class ResnetBlock(nnx.Module):
    """Release `Resnet3DBlock`: x + conv2(silu(norm2(conv1(silu(norm1(x)))))), 1x1x1 shortcut on width change."""

    def __init__(self, c_in: int, c_out: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.norm1 = FrameGroupNorm(c_in, cfg, rngs=rngs)
        self.conv1 = CausalConv3d(c_in, c_out, 3, cfg, rngs=rngs)
        self.norm2 = FrameGroupNorm(c_out, cfg, rngs=rngs)
        self.conv2 = CausalConv3d(c_out, c_out, 3, cfg, rngs=rngs)
        self.nin_shortcut = CausalConv3d(c_in, c_out, 1, cfg, rngs=rngs) if c_in != c_out else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(self.norm1(x, silu=True))
        h = self.conv2(self.norm2(h, silu=True))
        return h + (x if self.nin_shortcut is None else self.nin_shortcut(x))


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, block: int) -> jax.Array:
    """Single-head causal softmax attention over a flattened sequence: q/k/v [B, N, C] -> [B, N, C].

    Queries go `block` rows at a time through `lax.map`, so the logits held at once are [B, block, N]
    instead of [B, N, N] (42k tokens at 544x992); each row still sees every key, so the result is the
    plain softmax of the release."""
    b, n, c = q.shape
    scale = c**-0.5
    keys = jnp.arange(n)

    def rows(qb: jax.Array, start) -> jax.Array:  # [B, R, C]
        logits = jnp.einsum("bqc,bkc->bqk", qb, k, precision=_HIGHEST).astype(jnp.float32) * scale
        mask = (start + jnp.arange(qb.shape[1]))[:, None] >= keys[None, :]
        probs = jax.nn.softmax(jnp.where(mask[None], logits, -jnp.inf), axis=-1).astype(v.dtype)
        return jnp.einsum("bqk,bkc->bqc", probs, v, precision=_HIGHEST)

    if n <= block:
        return rows(q, 0)
    nb = -(-n // block)
    qp = jnp.pad(q, ((0, 0), (0, nb * block - n), (0, 0))).reshape(b, nb, block, c).swapaxes(0, 1)
    out = jax.lax.map(lambda a: rows(a[0], a[1]), (qp, jnp.arange(nb) * block))  # [nb, B, R, C]
    return out.swapaxes(0, 1).reshape(b, nb * block, c)[:, :n]


class AttentionBlock(nnx.Module):
    """Release `AttnBlock`: x + proj_out(attention(norm(x))), causal over the flattened (t, h, w) order."""

    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.block = cfg.attention_block
        self.norm = FrameGroupNorm(channels, cfg, rngs=rngs)
        self.q = CausalConv3d(channels, channels, 1, cfg, rngs=rngs)
        self.k = CausalConv3d(channels, channels, 1, cfg, rngs=rngs)
        self.v = CausalConv3d(channels, channels, 1, cfg, rngs=rngs)
        self.proj_out = CausalConv3d(channels, channels, 1, cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, C]
        b, t, h, w, c = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, t * h * w, c) for m in (self.q, self.k, self.v))
        out = causal_attention(q, k, v, self.block).reshape(b, t, h, w, c)
        return self.proj_out(out) + x


class UpsampleResBlock(nnx.Module):
    """Release `Res3DBlockUpsample` (same width, no downsampling):
    silu(norm2(conv2(silu(norm1(conv1(x))))) + x) + x -- the input is added twice, as released."""

    def __init__(self, channels: int, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.conv1 = CausalConv3d(channels, channels, 3, cfg, rngs=rngs)
        self.norm1 = FrameGroupNorm(channels, cfg, rngs=rngs)
        self.conv2 = CausalConv3d(channels, channels, 3, cfg, rngs=rngs)
        self.norm2 = FrameGroupNorm(channels, cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.norm1(self.conv1(x), silu=True)
        h = self.norm2(self.conv2(h))
        return jax.nn.silu(h + x) + x


# ---------------------------------------------------------------------- (un)shuffles, channels-last
def pixel_unshuffle_3d(x: jax.Array, factor: int) -> jax.Array:
    """[B, T, H, W, C] -> [B, (T+f-1)/f, H/f, W/f, C*f^3] after f-1 zero frames in front; the output
    channel is c*f^3 + (dt*f + dh)*f + dw, the release's order."""
    f = factor
    x = jnp.pad(x, ((0, 0), (f - 1, 0), (0, 0), (0, 0), (0, 0)))
    b, t, h, w, c = x.shape
    x = x.reshape(b, t // f, f, h // f, f, w // f, f, c).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, t // f, h // f, w // f, c * f**3)


def pixel_shuffle_3d(x: jax.Array, factor: int) -> jax.Array:
    """Inverse layout of `pixel_unshuffle_3d`: [B, T, H, W, C*f^3] -> [B, T*f-(f-1), H*f, W*f, C]
    (the first f-1 frames are dropped, as released)."""
    f = factor
    b, t, h, w, cf = x.shape
    c = cf // f**3
    x = x.reshape(b, t, h, w, c, f, f, f).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, t * f, h * f, w * f, c)[:, f - 1 :]


def channel_average(x: jax.Array, out_channels: int) -> jax.Array:
    """Mean over consecutive groups of channels: [..., C] -> [..., out_channels]."""
    return jnp.mean(x.reshape(*x.shape[:-1], out_channels, x.shape[-1] // out_channels), axis=-1)
