"""An independent float64 NumPy forward of the released Video-VAE v2, in the release's layouts.

Written from ../shared/REFERENCE.md and a reading of the release's semantics, with channels-first
tensors [B, C, T, H, W] as the release holds them (the model under test is channels-last), so the
(un)shuffle channel orders and the padding are checked independently. It reads weights under the
release's key names (the released file's spelling `decoder.conv_out.weight`).
"""

from __future__ import annotations

import numpy as np

GROUPS, EPS = 32, 1e-5


def _silu(x):
    return x / (1 + np.exp(-x))


def conv3d(x, w, b, stride=1):
    """Causal conv: (kt-1) zero frames in front, k//2 zero pixels each side; x [B, C, T, H, W], w [O, C, kt, kh, kw]."""
    o, c, kt, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (kt - 1, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    t_out = (x.shape[2] - kt) // stride + 1
    h_out = (x.shape[3] - kh) // stride + 1
    w_out = (x.shape[4] - kw) // stride + 1
    y = np.zeros((x.shape[0], o, t_out, h_out, w_out))
    for dt in range(kt):
        for dh in range(kh):
            for dw in range(kw):
                patch = x[
                    :,
                    :,
                    dt : dt + stride * (t_out - 1) + 1 : stride,
                    dh : dh + stride * (h_out - 1) + 1 : stride,
                    dw : dw + stride * (w_out - 1) + 1 : stride,
                ]
                y += np.einsum("bcthw,oc->bothw", patch, w[:, :, dt, dh, dw])
    return y + b[None, :, None, None, None]


def conv2d_frames(x, w, b, stride, pad):
    """Per-frame 2D conv; pad = (top, bottom, left, right) zeros."""
    o, c, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (0, 0), pad[:2], pad[2:]))
    h_out = (x.shape[3] - kh) // stride + 1
    w_out = (x.shape[4] - kw) // stride + 1
    y = np.zeros((x.shape[0], o, x.shape[2], h_out, w_out))
    for dh in range(kh):
        for dw in range(kw):
            patch = x[:, :, :, dh : dh + stride * (h_out - 1) + 1 : stride, dw : dw + stride * (w_out - 1) + 1 : stride]
            y += np.einsum("bcthw,oc->bothw", patch, w[:, :, dh, dw])
    return y + b[None, :, None, None, None]


def group_norm(x, w, b):
    """Per-frame GroupNorm (version 2)."""
    B, C, T, H, W = x.shape
    g = x.reshape(B, GROUPS, C // GROUPS, T, H, W)
    mu = g.mean(axis=(2, 4, 5), keepdims=True)
    var = ((g - mu) ** 2).mean(axis=(2, 4, 5), keepdims=True)
    y = ((g - mu) / np.sqrt(var + EPS)).reshape(B, C, T, H, W)
    return y * w[None, :, None, None, None] + b[None, :, None, None, None]


class _W:
    def __init__(self, weights, prefix):
        self.w, self.p = weights, prefix

    def __call__(self, name):
        return np.asarray(self.w[self.p + name], np.float64)

    def has(self, name):
        return self.p + name in self.w

    def sub(self, name):
        return _W(self.w, self.p + name + ".")


def resnet(W, x):
    h = conv3d(_silu(group_norm(x, W("norm1.weight"), W("norm1.bias"))), W("conv1.conv.weight"), W("conv1.conv.bias"))
    h = conv3d(_silu(group_norm(h, W("norm2.weight"), W("norm2.bias"))), W("conv2.conv.weight"), W("conv2.conv.bias"))
    if W.has("nin_shortcut.conv.weight"):
        x = conv3d(x, W("nin_shortcut.conv.weight"), W("nin_shortcut.conv.bias"))
    return x + h


def attention(W, x):
    B, C, T, H, Wd = x.shape
    y = group_norm(x, W("norm.weight"), W("norm.bias"))
    q, k, v = (conv3d(y, W(f"{n}.conv.weight"), W(f"{n}.conv.bias")).reshape(B, C, -1) for n in "qkv")
    logits = np.einsum("bcq,bck->bqk", q, k) / np.sqrt(C)
    n = logits.shape[-1]
    logits = np.where(np.tril(np.ones((n, n), bool))[None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bqk,bck->bcq", p, v).reshape(B, C, T, H, Wd)
    return conv3d(out, W("proj_out.conv.weight"), W("proj_out.conv.bias")) + x


def mid(W, x):
    return resnet(W.sub("block_2"), attention(W.sub("attn_1"), resnet(W.sub("block_1"), x)))


def unshuffle(x, f):
    x = np.pad(x, ((0, 0), (0, 0), (f - 1, 0), (0, 0), (0, 0)))
    B, C, D, H, W = x.shape
    x = x.reshape(B, C, D // f, f, H // f, f, W // f, f).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(B, C * f**3, D // f, H // f, W // f)


def shuffle(x, f):
    B, C, D, H, W = x.shape
    c = C // f**3
    x = x.reshape(B, c, f, f, f, D, H, W).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(B, c, D * f, H * f, W * f)[:, :, f - 1 :]


def channel_mean(x, out):
    B, C = x.shape[:2]
    return x.reshape(B, out, C // out, *x.shape[2:]).mean(2)


def encoder(weights, cfg, x):
    """One chunk [B, C, T, H, W] -> moments [B, 2z, T', h, w]."""
    W = _W(weights, "encoder.")
    enc = cfg["encoder"]
    levels, nres = len(enc["ch_mult"]), cfg["num_res_blocks"]
    h = conv3d(x, W("conv_in.conv.weight"), W("conv_in.conv.bias"))
    for i in range(levels):
        for j in range(nres):
            h = resnet(W.sub(f"down.{i}.block.{j}"), h)
        if i == levels - 1:
            continue
        if i in enc["down_sampling_layer"]:
            h = conv3d(
                h, W(f"down.{i}.downsample.conv.conv.weight"), W(f"down.{i}.downsample.conv.conv.bias"), stride=2
            )
        else:
            h = conv2d_frames(
                h, W(f"down.{i}.downsample.conv.weight"), W(f"down.{i}.downsample.conv.bias"), 2, (0, 1, 0, 1)
            )
    h = mid(W.sub("mid"), h)
    h = _silu(group_norm(h, W("norm_out.weight"), W("norm_out.bias")))
    z = cfg["z_channels"]
    pc = 32 * z
    short = channel_mean(unshuffle(h, 2), pc)
    h = unshuffle(conv3d(h, W("conv_patchify.conv.conv.weight"), W("conv_patchify.conv.conv.bias")), 2) + short
    return conv3d(h, W("conv_out.conv.weight"), W("conv_out.conv.bias")) + channel_mean(h, 2 * z)


def decoder(weights, cfg, z):
    """One chunk of latents [B, z, t, h, w] -> frames [B, C, T, H, W]."""
    W = _W(weights, "decoder.")
    dec = cfg["decoder"]
    levels, nres = len(dec["ch_mult"]), cfg["num_res_blocks"]
    zc = cfg["z_channels"]
    pc = 32 * zc
    width = dec["ch"] * dec["ch_mult"][-1]
    h = conv3d(z, W("conv_in.conv.weight"), W("conv_in.conv.bias")) + np.repeat(z, pc // zc, axis=1)
    short = shuffle(np.repeat(h, width * 8 // pc, axis=1), 2)
    h = shuffle(conv3d(h, W("conv_unpatchify.conv.conv.weight"), W("conv_unpatchify.conv.conv.bias")), 2) + short
    h = mid(W.sub("mid"), h)
    for i in reversed(range(levels)):
        for j in range(nres + 1):
            h = resnet(W.sub(f"up.{i}.block.{j}"), h)
        if i == 0:
            continue
        U = W.sub(f"up.{i}.upsample")
        if i in dec["temporal_up_layers"]:
            h = h.repeat(2, axis=2).repeat(2, axis=3).repeat(2, axis=4)
            r = _silu(
                group_norm(
                    conv3d(h, U("conv3d.conv1.conv.weight"), U("conv3d.conv1.conv.bias")),
                    U("conv3d.norm1.weight"),
                    U("conv3d.norm1.bias"),
                )
            )
            r = group_norm(
                conv3d(r, U("conv3d.conv2.conv.weight"), U("conv3d.conv2.conv.bias")),
                U("conv3d.norm2.weight"),
                U("conv3d.norm2.bias"),
            )
            h = _silu(r + h) + h
        else:
            h = conv2d_frames(h.repeat(2, axis=3).repeat(2, axis=4), U("conv.weight"), U("conv.bias"), 1, (1, 1, 1, 1))
    h = _silu(group_norm(h, W("norm_out.weight"), W("norm_out.bias")))
    h = conv3d(h, W("conv_out.weight"), W("conv_out.bias"))
    return h[:, :, dec["temporal_downsample"] - 1 :]


def encode_moments(weights, cfg, video):
    """(b, f, C, H, W) -> (b, f', 2z, h, w), chunks of frame_len frames (or one chunk of one frame)."""
    L = cfg.get("frame_len", 17)
    x = video.astype(np.float64).transpose(0, 2, 1, 3, 4)
    chunks = [x[:, :, i : i + L] for i in range(0, x.shape[2], L)]
    return np.concatenate([encoder(weights, cfg, c) for c in chunks], axis=2).transpose(0, 2, 1, 3, 4)


def decode(weights, cfg, latents, keep=0.6):
    """(b, f', z, h, w) -> (b, f, C, H, W): chunks of latent_len latent frames, boundary mix."""
    n = cfg.get("latent_len", 3)
    z = latents.astype(np.float64).transpose(0, 2, 1, 3, 4)
    frames = [decoder(weights, cfg, z[:, :, i : i + n]) for i in range(0, z.shape[2], n)]
    x = np.concatenate(frames, axis=2).transpose(0, 2, 1, 3, 4)  # [b, f, C, H, W]
    L = frames[0].shape[2]
    for k in range(L, x.shape[1], L):
        a, b = x[:, k - 1].copy(), x[:, k].copy()
        b = keep * b + (1 - keep) * a
        a = keep * a + (1 - keep) * b
        x[:, k - 1], x[:, k] = a, b
    return x
