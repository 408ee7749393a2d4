"""An independent float64 NumPy forward of the released DiT, written from ../shared/REFERENCE.md.

It reads weights under the release's key names and takes inputs in the release's layout, so a model
that matches it on random weights of any shape matches the release's math; the PyTorch fixtures pin
it to the real thing.
"""

from __future__ import annotations

import math

import numpy as np

from stepvideo_jax.convert.dit import release_dit_shapes
from stepvideo_jax.dit import DiTConfig


def _ln(x, eps, w=None, b=None):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if w is not None:
        y = y * w + b
    return y


def _rms(x, w, eps=1e-6):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x):
    return x / (1 + np.exp(-x))


def _lin(W, x, prefix, bias=True):
    y = x @ W[prefix + ".weight"].T
    return y + W[prefix + ".bias"] if bias else y


def sinusoid(t, dim=256):
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    args = np.asarray(t, np.float64)[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], -1)  # cos first


def rope(x, f, h, w, split=(64, 32, 32)):
    """x [B, N, H, D]; 3D rotate-half RoPE, positions frame-major."""
    pos = np.stack(np.meshgrid(np.arange(f), np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 3)
    out, start = [], 0
    for axis, d in enumerate(split):
        seg = x[..., start : start + d]
        inv = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
        ang = pos[:, axis, None] * inv[None]
        ang = np.concatenate([ang, ang], -1)[None, :, None, :]
        rot = np.concatenate([-seg[..., d // 2 :], seg[..., : d // 2]], -1)
        out.append(seg * np.cos(ang) + rot * np.sin(ang))
        start += d
    return np.concatenate(out, -1)


def _attn(q, k, v, mask=None):
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask[:, None, None, :], logits, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p = p / p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def dit_forward(W, cfg, hidden_states, timestep, enc, mask, enc2=None, cond=None, motion_score=None):
    """Release layout in and out: hidden_states (B, F, C, H, W)."""
    W = {k: np.asarray(v, np.float64) for k, v in W.items()}
    nh, hd, L, p = cfg["num_attention_heads"], cfg["attention_head_dim"], cfg["num_layers"], cfg["patch_size"]
    D = nh * hd
    x = np.asarray(hidden_states, np.float64)
    if cond is not None:
        x = np.concatenate([x, np.asarray(cond, np.float64)], 2)
    B, F, C, H, Wd = x.shape
    hp, wp = H // p, Wd // p
    # conv patch embed: (B F C H W) -> tokens (B, F*hp*wp, D)
    k = W["pos_embed.proj.weight"]  # (D, C, p, p)
    patches = x.reshape(B, F, C, hp, p, wp, p).transpose(0, 1, 3, 5, 2, 4, 6).reshape(B, F * hp * wp, C * p * p)
    tok = patches @ k.reshape(D, -1).T + W["pos_embed.proj.bias"]

    emb = _lin(
        W,
        _silu(_lin(W, sinusoid(np.asarray(timestep) * 1000.0), "adaln_single.emb.timestep_embedder.linear_1")),
        "adaln_single.emb.timestep_embedder.linear_2",
    )
    if motion_score is not None:
        ms = np.full((B,), float(motion_score))
        e = "adaln_single.emb.motion_score_embedder."
        emb = emb + _lin(W, _silu(_lin(W, sinusoid(ms), e + "linear_1")), e + "linear_2")
    mod = _lin(W, _silu(emb), "adaln_single.linear").reshape(B, 6, D)

    ctx = _ln(np.asarray(enc, np.float64), cfg.get("norm_eps", 1e-6))
    ctx = _lin(W, _gelu_tanh(_lin(W, ctx, "caption_projection.linear_1")), "caption_projection.linear_2")
    if enc2 is not None:
        ctx = np.concatenate([_lin(W, np.asarray(enc2, np.float64), "clip_projection"), ctx], 1)
    n_valid = np.asarray(mask).sum(1).astype(int)
    kmask = np.arange(ctx.shape[1])[None] < n_valid[:, None]

    for i in range(L):
        pre = f"transformer_blocks.{i}."
        sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = [
            (W[pre + "scale_shift_table"][None] + mod)[:, j, None, :] for j in range(6)
        ]
        h = _ln(tok, 1e-5, W[pre + "norm1.weight"], W[pre + "norm1.bias"]) * (1 + sc_msa) + sh_msa
        qkv = (h @ W[pre + "attn1.wqkv.weight"].T).reshape(B, -1, nh, 3 * hd)
        q, kk, v = qkv[..., :hd], qkv[..., hd : 2 * hd], qkv[..., 2 * hd :]
        q = rope(_rms(q, W[pre + "attn1.q_norm.weight"]), F, hp, wp)
        kk = rope(_rms(kk, W[pre + "attn1.k_norm.weight"]), F, hp, wp)
        a = _attn(q, kk, v).reshape(B, -1, D) @ W[pre + "attn1.wo.weight"].T
        tok = tok + g_msa * a
        q = _rms((tok @ W[pre + "attn2.wq.weight"].T).reshape(B, -1, nh, hd), W[pre + "attn2.q_norm.weight"])
        kv = (ctx @ W[pre + "attn2.wkv.weight"].T).reshape(B, -1, nh, 2 * hd)
        kk = _rms(kv[..., :hd], W[pre + "attn2.k_norm.weight"])
        tok = tok + _attn(q, kk, kv[..., hd:], kmask).reshape(B, -1, D) @ W[pre + "attn2.wo.weight"].T
        h = _ln(tok, 1e-5, W[pre + "norm2.weight"], W[pre + "norm2.bias"]) * (1 + sc_mlp) + sh_mlp
        ff = _gelu_tanh(h @ W[pre + "ff.net.0.proj.weight"].T) @ W[pre + "ff.net.2.weight"].T
        tok = tok + g_mlp * ff

    shift, scale = (
        (W["scale_shift_table"][None] + emb[:, None])[:, 0, None],
        (W["scale_shift_table"][None] + emb[:, None])[:, 1, None],
    )
    tok = _ln(tok, cfg.get("norm_eps", 1e-6)) * (1 + scale) + shift
    out = _lin(W, tok, "proj_out")  # (B, N, p*p*Cout)
    cout = out.shape[-1] // (p * p)
    out = out.reshape(B, F, hp, wp, p, p, cout).transpose(0, 1, 6, 2, 4, 3, 5).reshape(B, F, cout, H, Wd)
    return out


def random_release_weights(cfg, seed=0, scale=0.3):
    """Random weights under the release's key names and shapes (`release_dit_shapes`) for a DiT config dict."""
    rng = np.random.default_rng(seed)
    shapes = release_dit_shapes(DiTConfig.from_release(cfg))
    out = {}
    for k, s in shapes.items():
        fan_in = int(np.prod(s[1:])) if len(s) > 1 else 1
        std = scale / math.sqrt(fan_in) if len(s) > 1 else scale
        a = rng.normal(0.0, std, s)
        if k.endswith("norm.weight") or k.endswith("norm1.weight") or k.endswith("norm2.weight"):
            a = 1.0 + a
        out[k] = a.astype(np.float32)
    return out
