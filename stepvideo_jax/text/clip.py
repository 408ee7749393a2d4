"""HunyuanCLIP text encoder: a BERT encoder (HF `BertModel`) in Flax NNX.

Embeddings (word + absolute position + token type 0) -> LayerNorm -> post-LN blocks
(self-attention with the padding mask as an additive "extended" mask -> dense -> residual ->
LayerNorm; dense -> exact GELU -> dense -> residual -> LayerNorm) -> `last_hidden_state`, and the
pooler (dense + tanh on the first token) -> `pooler_output`. Dropout is inference-off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from stepvideo_jax.config import DtypeFields, dtype_from_name, remat_policy
from stepvideo_jax.layers import dense, dense_general, layer_norm, logical, run_layer_stack
from stepvideo_jax.sharding import constrain, enters_rules
from stepvideo_jax.text.sharding import TEXT_SHARDING

__all__ = ["ClipConfig", "HunyuanCLIP", "ClipBlock"]

_ACT = ("batch", "seq", "embed")
_HEADS_ACT = ("batch", "seq", "heads", "kv")


@dataclasses.dataclass(frozen=True)
class ClipConfig(DtypeFields):
    vocab_size: int = 47020
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_length: int = 77  # tokenizer length used by the release
    # Runtime knobs (not part of the released config).
    param_dtype: str = "float32"
    dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}")
        if self.max_length > self.max_position_embeddings:
            raise ValueError(
                f"max_length {self.max_length} exceeds max_position_embeddings {self.max_position_embeddings}"
            )
        dtype_from_name(self.param_dtype)
        dtype_from_name(self.dtype)
        remat_policy(self.remat_policy)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_release(cls, cfg: Mapping[str, Any], **overrides) -> ClipConfig:
        """Builds the config from a BERT `config.json` (the release's `clip_text_encoder/config.json`)."""
        act = cfg.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"unsupported hidden_act {act!r}; expected 'gelu' (exact GELU, as released)")
        pos_type = cfg.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {pos_type!r}; expected 'absolute'")
        if cfg.get("is_decoder", False) or cfg.get("add_cross_attention", False):
            raise ValueError("a decoder BERT (is_decoder / add_cross_attention) is not supported; expected an encoder")
        fields = dict(
            vocab_size=int(cfg.get("vocab_size", 47020)),
            hidden_size=int(cfg.get("hidden_size", 1024)),
            num_layers=int(cfg.get("num_hidden_layers", 24)),
            num_heads=int(cfg.get("num_attention_heads", 16)),
            intermediate_size=int(cfg.get("intermediate_size", 4096)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 512)),
            type_vocab_size=int(cfg.get("type_vocab_size", 2)),
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        )
        fields["max_length"] = min(77, fields["max_position_embeddings"])
        fields.update(overrides)
        return cls(**fields)

    def to_release(self) -> dict[str, Any]:
        return {
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
        }


def _ln_params(dim: int, cfg: ClipConfig) -> tuple[nnx.Param, nnx.Param]:
    key = jax.random.key(0)
    scale = logical(nnx.initializers.ones_init(), ("norm",))(key, (dim,), cfg.jnp_param_dtype)
    bias = logical(nnx.initializers.zeros_init(), ("norm",))(key, (dim,), cfg.jnp_param_dtype)
    return nnx.Param(scale), nnx.Param(bias)


def _embed(num: int, dim: int, names: tuple[str | None, str], cfg: ClipConfig, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(
        num,
        dim,
        dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype,
        embedding_init=logical(nnx.initializers.normal(0.02), names),
        rngs=rngs,
    )


class ClipAttention(nnx.Module):
    def __init__(self, cfg: ClipConfig, *, rngs: nnx.Rngs):
        d, h, hd = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, use_bias=True)
        self.cfg = cfg
        self.query = dense_general(d, (h, hd), names=("embed", "heads", "kv"), **kw)
        self.key = dense_general(d, (h, hd), names=("embed", "heads", "kv"), **kw)
        self.value = dense_general(d, (h, hd), names=("embed", "heads", "kv"), **kw)
        # Built directly: its bias is over the output (embed) axis only.
        self.output = nnx.LinearGeneral(
            (h, hd),
            d,
            axis=(-2, -1),
            use_bias=True,
            dtype=cfg.jnp_dtype,
            param_dtype=cfg.jnp_param_dtype,
            kernel_init=logical(nnx.initializers.lecun_normal(), ("heads", "kv", "embed")),
            bias_init=logical(nnx.initializers.zeros_init(), ("embed",)),
            precision=jax.lax.Precision.HIGHEST,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array, key_bias: jax.Array) -> jax.Array:
        q = constrain(self.query(x), _HEADS_ACT)  # [B, L, H, hd]
        k = constrain(self.key(x), _HEADS_ACT)
        v = constrain(self.value(x), _HEADS_ACT)
        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", q, k, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32
        )  # [B, H, L, L]
        logits = logits * (self.cfg.head_dim**-0.5) + key_bias[:, None, None, :]
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=jax.lax.Precision.HIGHEST)  # [B, L, H, hd]
        return constrain(self.output(out), _ACT)


class ClipBlock(nnx.Module):
    """Post-LN BERT layer."""

    def __init__(self, cfg: ClipConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, use_bias=True)
        self.cfg = cfg
        self.attention = ClipAttention(cfg, rngs=rngs)
        self.attention_norm_scale, self.attention_norm_bias = _ln_params(d, cfg)
        self.intermediate = dense(d, f, names=("embed", "mlp"), **kw)
        self.output = dense(f, d, names=("mlp", "embed"), **kw)
        self.output_norm_scale, self.output_norm_bias = _ln_params(d, cfg)

    def __call__(self, x: jax.Array, key_bias: jax.Array) -> jax.Array:
        eps = self.cfg.layer_norm_eps
        x = layer_norm(
            x + self.attention(x, key_bias).astype(x.dtype),
            eps,
            self.attention_norm_scale[...],
            self.attention_norm_bias[...],
        )
        h = constrain(jax.nn.gelu(self.intermediate(x), approximate=False), ("batch", "seq", "mlp"))  # [B, L, F]
        x = layer_norm(x + self.output(h).astype(x.dtype), eps, self.output_norm_scale[...], self.output_norm_bias[...])
        return constrain(x, _ACT)


class HunyuanCLIP(nnx.Module):
    SHARDING = TEXT_SHARDING

    """`HunyuanCLIP(cfg, rngs=)(input_ids [B, L], attention_mask [B, L]) -> (last_hidden_state
    [B, L, D], pooler_output [B, D])`."""

    def __init__(self, cfg: ClipConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.cfg = cfg
        self.word_embeddings = _embed(cfg.vocab_size, d, ("vocab", "embed"), cfg, rngs)
        self.position_embeddings = _embed(cfg.max_position_embeddings, d, (None, "embed"), cfg, rngs)
        self.token_type_embeddings = _embed(cfg.type_vocab_size, d, (None, "embed"), cfg, rngs)
        self.embeddings_norm_scale, self.embeddings_norm_bias = _ln_params(d, cfg)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def _make_layers(rngs: nnx.Rngs) -> ClipBlock:
            return ClipBlock(cfg, rngs=rngs)

        self.layers = _make_layers(rngs)  # every parameter has a leading [num_layers] axis
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, use_bias=True)
        self.pooler = dense(d, d, names=("embed", None), **kw)

    @enters_rules(TEXT_SHARDING)
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        cfg = self.cfg
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, tokens); got shape {tuple(input_ids.shape)}")
        b, length = input_ids.shape
        if length > cfg.max_position_embeddings:
            raise ValueError(f"{length} tokens exceed max_position_embeddings {cfg.max_position_embeddings}")
        if attention_mask is None:
            attention_mask = jnp.ones((b, length), jnp.int32)
        if tuple(attention_mask.shape) != (b, length):
            raise ValueError(
                f"attention_mask must have the shape of input_ids {(b, length)}; got {tuple(attention_mask.shape)}"
            )
        dtype = cfg.jnp_dtype
        positions = jnp.arange(length, dtype=jnp.int32)
        x = (
            self.word_embeddings(input_ids.astype(jnp.int32))
            + self.token_type_embeddings(jnp.zeros((1, length), jnp.int32))  # token type 0 everywhere
            + self.position_embeddings(positions)[None]
        )  # [B, L, D]
        x = layer_norm(
            x.astype(dtype), cfg.layer_norm_eps, self.embeddings_norm_scale[...], self.embeddings_norm_bias[...]
        )
        x = constrain(x, _ACT)
        # HF's extended mask: (1 - mask) * finfo(float32).min added to the logits of padded keys.
        key_bias = (1.0 - attention_mask.astype(jnp.float32)) * jnp.finfo(jnp.float32).min  # [B, L]
        x = self._run_layers(x, key_bias)
        pooled = jnp.tanh(self.pooler(x[:, 0]))  # [B, D]
        return x, pooled

    def _run_layers(self, x: jax.Array, key_bias: jax.Array) -> jax.Array:
        cfg = self.cfg

        def layer(block: ClipBlock, x: jax.Array) -> jax.Array:
            return block(x, key_bias)

        return run_layer_stack(
            self.layers, x, layer, num_layers=cfg.num_layers, scan=cfg.scan_layers, remat=cfg.remat_policy
        )
