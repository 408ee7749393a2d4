"""Transformer block of the Step-Video DiT: AdaLN-modulated self-attention (3D RoPE, QK-norm),
unmodulated cross-attention to the text tokens, AdaLN-modulated tanh-GELU FFN."""

from __future__ import annotations

import jax
from flax import nnx

from stepvideo_jax.attention import sharded_attention
from stepvideo_jax.dit.config import DiTConfig
from stepvideo_jax.dit.rope import apply_rope
from stepvideo_jax.layers import dense, dense_general, gelu_tanh, layer_norm, logical, rms_norm
from stepvideo_jax.sharding import constrain

__all__ = ["DiTBlock", "SelfAttention", "CrossAttention", "FeedForward"]

_ACT = ("batch", "seq", "embed")
_HEADS_ACT = ("batch", "seq", "heads", "kv")


def _norm_param(dim: int, cfg: DiTConfig, value: float = 1.0) -> nnx.Param:
    init = nnx.initializers.constant(value)
    return nnx.Param(logical(init, ("norm",))(jax.random.key(0), (dim,), cfg.jnp_param_dtype))


class SelfAttention(nnx.Module):
    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        d, h, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, quantize=cfg.quantize)
        self.cfg = cfg
        # Output features grouped per head as released: [h0: q k v][h1: q k v]...
        self.wqkv = dense_general(d, (h, 3 * hd), names=("embed", "heads", "kv"), **kw)
        self.wo = dense_general((h, hd), d, axis=(-2, -1), names=("heads", "kv", "embed"), **kw)
        self.q_norm = _norm_param(hd, cfg)
        self.k_norm = _norm_param(hd, cfg)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        cfg = self.cfg
        hd = cfg.head_dim
        qkv = constrain(self.wqkv(x), _HEADS_ACT[:3] + ("kv",))  # [B, N, H, 3*hd]
        q, k, v = qkv[..., :hd], qkv[..., hd : 2 * hd], qkv[..., 2 * hd :]
        q = rms_norm(q, cfg.qk_norm_eps, self.q_norm[...])
        k = rms_norm(k, cfg.qk_norm_eps, self.k_norm[...])
        q = apply_rope(q, cos, sin, cfg.rope_split)
        k = apply_rope(k, cos, sin, cfg.rope_split)
        # On a mesh with sequence shards: Ulysses all-to-all around the kernel.
        out = sharded_attention(q, k, v, kernel=cfg.attention_kernel, self_attention=True)  # [B, N, H, hd]
        return constrain(self.wo(constrain(out, _HEADS_ACT)), _ACT)


class CrossAttention(nnx.Module):
    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        d, h, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, quantize=cfg.quantize)
        self.cfg = cfg
        self.wq = dense_general(d, (h, hd), names=("embed", "heads", "kv"), **kw)
        # Per head [k | v], as released.
        self.wkv = dense_general(d, (h, 2 * hd), names=("embed", "heads", "kv"), **kw)
        self.wo = dense_general((h, hd), d, axis=(-2, -1), names=("heads", "kv", "embed"), **kw)
        self.q_norm = _norm_param(hd, cfg)
        self.k_norm = _norm_param(hd, cfg)

    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array) -> jax.Array:
        cfg = self.cfg
        hd = cfg.head_dim
        q = rms_norm(self.wq(x), cfg.qk_norm_eps, self.q_norm[...])  # [B, N, H, hd]
        kv = self.wkv(context)  # [B, M, H, 2*hd]
        k = rms_norm(kv[..., :hd], cfg.qk_norm_eps, self.k_norm[...])
        v = kv[..., hd:]
        # The text mask only removes keys, so the query sequence stays free to be sharded.
        out = sharded_attention(q, k, v, kv_mask=context_mask, kernel=cfg.attention_kernel, self_attention=False)
        return constrain(self.wo(out), _ACT)


class FeedForward(nnx.Module):
    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        kw = dict(
            dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, use_bias=False, quantize=cfg.quantize
        )
        self.w_in = dense(d, cfg.ffn_mult * d, names=("embed", "mlp"), **kw)
        self.w_out = dense(cfg.ffn_mult * d, d, names=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = constrain(gelu_tanh(self.w_in(x)), ("batch", "seq", "mlp"))
        return constrain(self.w_out(h), _ACT)


class DiTBlock(nnx.Module):
    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.cfg = cfg
        self.norm1_scale = _norm_param(d, cfg, 1.0)
        self.norm1_bias = _norm_param(d, cfg, 0.0)
        self.attn1 = SelfAttention(cfg, rngs=rngs)
        self.attn2 = CrossAttention(cfg, rngs=rngs)
        self.norm2_scale = _norm_param(d, cfg, 1.0)
        self.norm2_bias = _norm_param(d, cfg, 0.0)
        self.ff = FeedForward(cfg, rngs=rngs)
        table = jax.random.normal(rngs.params(), (6, d), cfg.jnp_param_dtype) / d**0.5
        self.scale_shift_table = nnx.Param(table, out_sharding=(None, "embed"), eager_sharding=False)

    def __call__(
        self,
        x: jax.Array,  # [B, N, D]
        context: jax.Array,  # [B, M, D]
        context_mask: jax.Array,  # [B, M] bool
        modulation: jax.Array,  # [B, 6, D] shared AdaLN output
        cos: jax.Array,  # [N, head_dim]
        sin: jax.Array,
    ) -> jax.Array:
        cfg = self.cfg
        mod = (self.scale_shift_table[...][None].astype(modulation.dtype) + modulation)[:, :, None, :]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (mod[:, i] for i in range(6))
        h = layer_norm(x, cfg.block_norm_eps, self.norm1_scale[...], self.norm1_bias[...])
        h = (h * (1 + scale_msa) + shift_msa).astype(x.dtype)
        x = x + (gate_msa * self.attn1(h, cos, sin)).astype(x.dtype)
        x = x + self.attn2(x, context, context_mask).astype(x.dtype)
        h = layer_norm(x, cfg.block_norm_eps, self.norm2_scale[...], self.norm2_bias[...])
        h = (h * (1 + scale_mlp) + shift_mlp).astype(x.dtype)
        x = x + (gate_mlp * self.ff(h)).astype(x.dtype)
        return constrain(x, _ACT)
