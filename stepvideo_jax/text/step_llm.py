"""The Step-LLM text encoder (`Step1Model` in the release) in Flax NNX.

A decoder-only transformer used as a frozen text encoder: token embedding, pre-norm blocks
(RMSNorm -> grouped-query causal attention with a square-root ALiBi bias -> residual, RMSNorm ->
SwiGLU FFN -> residual) and no final norm; the last hidden states are the text features.

Attention semantics (what the release's closed CUDA kernel computes, see REFERENCE.md):
  logits[h, i, j] = q_i . k_j / sqrt(head_dim) - slope_h * sqrt(i - j)   for j <= i, masked for j > i.
The padding mask is *not* applied inside attention: the causal mask alone keeps each valid token
from seeing the padding after it, and the states of padding positions are never used downstream.

Memory: the ALiBi + causal bias is one [H, L, L] float32 array built once per forward and shared by
every layer of the scan (a closed-over constant, not a per-layer input); each layer materialises only
its own [B, H, L, L] logits. L is at most 320 here, so no blockwise kernel is needed.

Weights: the release's fused `wqkv` (q columns, then per KV group [k | v]) is split into `wq`
[D, H, hd] and `wkv` [D, G, 2*hd], and the fused SwiGLU `w1` ([gate | up]) into `w_gate` / `w_up`,
so each can be sharded on its own head / FFN axis (see `convert/step_llm.py`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepvideo_jax.config import DtypeFields, dtype_from_name, remat_policy
from stepvideo_jax.layers import dense, dense_general, logical, rms_norm, run_layer_stack
from stepvideo_jax.layers.quantized import check_quantize_mode
from stepvideo_jax.sharding import constrain, enters_rules
from stepvideo_jax.text.sharding import TEXT_SHARDING

__all__ = ["StepLLMConfig", "StepLLM", "StepLLMBlock", "alibi_slopes", "sqrt_alibi_causal_bias"]

_ACT = ("batch", "seq", "embed")


@dataclasses.dataclass(frozen=True)
class StepLLMConfig(DtypeFields):
    hidden_size: int = 6144
    num_heads: int = 48
    num_groups: int = 8  # KV groups; query head i uses group i // (num_heads // num_groups)
    ffn_hidden_size: int = 16896  # rounded up to a multiple of `ffn_multiple_of`, as released
    num_layers: int = 48
    vocab_size: int = 65536
    norm_eps: float = 1e-5
    max_length: int = 320  # the release's `seq_length` (tokenizer length)
    ffn_multiple_of: int = 256
    # Runtime knobs (not part of the released config). The released weights are bf16.
    param_dtype: str = "float32"
    dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"
    # Weight-only quantization of the block linears: "none", "int8" or "fp8" (as `DiTConfig.quantize`).
    quantize: str = "none"

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}")
        if self.num_groups < 1 or self.num_heads % self.num_groups:
            raise ValueError(f"num_heads {self.num_heads} must be a multiple of num_groups {self.num_groups}")
        dtype_from_name(self.param_dtype)
        dtype_from_name(self.dtype)
        remat_policy(self.remat_policy)
        check_quantize_mode(self.quantize)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ffn_dim(self) -> int:
        """The FFN width actually built: ffn_hidden_size rounded up to ffn_multiple_of."""
        m = self.ffn_multiple_of
        return m * ((self.ffn_hidden_size + m - 1) // m)

    @classmethod
    def from_release(cls, cfg: Mapping[str, Any], **overrides) -> StepLLMConfig:
        """Builds the config from the release's `step_llm/config.json` fields."""
        if cfg.get("fp32_residual_connection", False):
            raise ValueError("fp32_residual_connection=True is not supported; expected false (as released)")
        if not cfg.get("use_flash_attn", True):
            raise ValueError("use_flash_attn=False has no released semantics; expected true (causal ALiBi kernel)")
        vocab = cfg.get("padded_vocab_size", cfg.get("vocab_size", 65536))
        fields = dict(
            hidden_size=int(cfg.get("hidden_size", 6144)),
            num_heads=int(cfg.get("num_attention_heads", 48)),
            num_groups=int(cfg.get("num_attention_groups", 8)),
            ffn_hidden_size=int(cfg.get("ffn_hidden_size", 16896)),
            num_layers=int(cfg.get("num_layers", 48)),
            vocab_size=int(vocab),
            norm_eps=float(cfg.get("layernorm_epsilon", 1e-5)),
            max_length=int(cfg.get("seq_length", 320)),
        )
        if "quantize" in cfg:  # not a release field: written for weight-only quantized conversions
            fields["quantize"] = str(cfg["quantize"])
        fields.update(overrides)
        return cls(**fields)

    def to_release(self) -> dict[str, Any]:
        quantize = {} if self.quantize == "none" else {"quantize": self.quantize}
        return quantize | {
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_heads,
            "num_attention_groups": self.num_groups,
            "ffn_hidden_size": self.ffn_hidden_size,
            "num_layers": self.num_layers,
            "padded_vocab_size": self.vocab_size,
            "layernorm_epsilon": self.norm_eps,
            "seq_length": self.max_length,
            "use_flash_attn": True,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
            "fp32_residual_connection": False,
            "embedding_weights_in_fp32": False,
        }


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi slopes [H] (float64): with n the largest power of two <= H, 2^(-8k/n) for k = 1..n,
    then 2^(-4k/n) for odd k = 1, 3, 5, ... for the remaining H - n heads."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1; got {num_heads}")
    n = 2 ** int(math.floor(math.log2(num_heads)))
    base = [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]
    extra = [2.0 ** (-4.0 * k / n) for k in range(1, 2 * (num_heads - n), 2)]
    return np.asarray(base + extra, dtype=np.float64)


def sqrt_alibi_causal_bias(num_heads: int, length: int) -> jax.Array:
    """[H, L, L] float32: -slope_h * sqrt(i - j) for key j <= query i, -inf above the diagonal."""
    slopes = jnp.asarray(alibi_slopes(num_heads), jnp.float32)  # [H]
    pos = jnp.arange(length, dtype=jnp.int32)
    dist = pos[:, None] - pos[None, :]  # [L, L] query - key
    causal = dist >= 0
    root = jnp.sqrt(jnp.maximum(dist, 0).astype(jnp.float32))
    bias = -slopes[:, None, None] * root[None]  # [H, L, L]
    return jnp.where(causal[None], bias, -jnp.inf)


def _norm_param(dim: int, cfg: StepLLMConfig) -> nnx.Param:
    return nnx.Param(logical(nnx.initializers.ones_init(), ("norm",))(jax.random.key(0), (dim,), cfg.jnp_param_dtype))


class StepLLMAttention(nnx.Module):
    def __init__(self, cfg: StepLLMConfig, *, rngs: nnx.Rngs):
        d, h, g, hd = cfg.hidden_size, cfg.num_heads, cfg.num_groups, cfg.head_dim
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, quantize=cfg.quantize)
        self.cfg = cfg
        self.wq = dense_general(d, (h, hd), names=("embed", "heads", "kv"), **kw)
        # Per KV group [k | v], as released. Groups get their own logical axis: 8 groups need not
        # divide the mesh axis that shards the 48 query heads.
        self.wkv = dense_general(d, (g, 2 * hd), names=("embed", "kv_heads", "kv"), **kw)
        self.wo = dense_general((h, hd), d, axis=(-2, -1), names=("heads", "kv", "embed"), **kw)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        cfg = self.cfg
        b, length, _ = x.shape
        g, hd = cfg.num_groups, cfg.head_dim
        r = cfg.num_heads // g
        q = constrain(self.wq(x), ("batch", "seq", "heads", "kv"))  # [B, L, H, hd]
        kv = constrain(self.wkv(x), ("batch", "seq", "kv_heads", "kv"))  # [B, L, G, 2*hd]
        k, v = kv[..., :hd], kv[..., hd:]  # [B, L, G, hd]
        # Query head i = group * r + j uses KV group i // r: grouping q as [G, r] needs no K/V copies.
        q = q.reshape(b, length, g, r, hd)
        logits = jnp.einsum(
            "bqgrd,bkgd->bgrqk", q, k, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32
        )  # [B, G, r, L, L]
        logits = logits * (hd**-0.5) + bias.reshape(g, r, length, length)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bgrqk,bkgd->bqgrd", probs, v, precision=jax.lax.Precision.HIGHEST)
        out = out.reshape(b, length, cfg.num_heads, hd)  # [B, L, H, hd]
        return constrain(self.wo(constrain(out, ("batch", "seq", "heads", "kv"))), _ACT)


class StepLLMFeedForward(nnx.Module):
    """SwiGLU: w2(silu(x @ w_gate) * (x @ w_up)); the release fuses [gate | up] in `w1`."""

    def __init__(self, cfg: StepLLMConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.ffn_dim
        kw = dict(
            dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, use_bias=False, quantize=cfg.quantize
        )
        self.w_gate = dense(d, f, names=("embed", "mlp"), **kw)
        self.w_up = dense(d, f, names=("embed", "mlp"), **kw)
        self.w2 = dense(f, d, names=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = constrain(jax.nn.silu(self.w_gate(x)) * self.w_up(x), ("batch", "seq", "mlp"))  # [B, L, F]
        return constrain(self.w2(h), _ACT)


class StepLLMBlock(nnx.Module):
    def __init__(self, cfg: StepLLMConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.attention_norm = _norm_param(cfg.hidden_size, cfg)
        self.attention = StepLLMAttention(cfg, rngs=rngs)
        self.ffn_norm = _norm_param(cfg.hidden_size, cfg)
        self.feed_forward = StepLLMFeedForward(cfg, rngs=rngs)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        eps = self.cfg.norm_eps
        x = x + self.attention(rms_norm(x, eps, self.attention_norm[...]), bias).astype(x.dtype)
        x = x + self.feed_forward(rms_norm(x, eps, self.ffn_norm[...])).astype(x.dtype)
        return constrain(x, _ACT)


class StepLLM(nnx.Module):
    SHARDING = TEXT_SHARDING

    """`StepLLM(cfg, rngs=)(input_ids [B, L], attention_mask [B, L]) -> hidden states [B, L, D]`."""

    def __init__(self, cfg: StepLLMConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.tok_embeddings = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.jnp_dtype,
            param_dtype=cfg.jnp_param_dtype,
            embedding_init=logical(nnx.initializers.normal(0.02), ("vocab", "embed")),
            rngs=rngs,
        )

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def _make_layers(rngs: nnx.Rngs) -> StepLLMBlock:
            return StepLLMBlock(cfg, rngs=rngs)

        self.layers = _make_layers(rngs)  # every parameter has a leading [num_layers] axis

    @enters_rules(TEXT_SHARDING)
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """`attention_mask` is checked and accepted for the release's signature but, as released, not
        applied: attention is causal only (padding follows the valid tokens)."""
        cfg = self.cfg
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, tokens); got shape {tuple(input_ids.shape)}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(attention_mask.shape)}"
            )
        length = input_ids.shape[1]
        x = constrain(self.tok_embeddings(input_ids.astype(jnp.int32)), _ACT)  # [B, L, D]
        bias = sqrt_alibi_causal_bias(cfg.num_heads, length)  # [H, L, L], shared by all layers
        return self._run_layers(x, bias)

    def _run_layers(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        cfg = self.cfg

        def layer(block: StepLLMBlock, x: jax.Array) -> jax.Array:
            return block(x, bias)

        return run_layer_stack(
            self.layers, x, layer, num_layers=cfg.num_layers, scan=cfg.scan_layers, remat=cfg.remat_policy
        )
