"""The Step-Video DiT (`StepVideoModel` in the release) in Flax NNX.

One implementation for text-to-video and text-image-to-video: ``use_additional_conditions`` doubles
the patch-embed input ([noisy | condition] latents on channels) and adds the motion-score embedding.
Latents are channels-last inside ([B, F, H, W, C]); ``__call__`` takes and returns the release's
layout (batch, frames, channels, height, width) so parity is direct, ``forward`` is channels-last.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from stepvideo_jax.dit.blocks import DiTBlock
from stepvideo_jax.dit.config import DiTConfig
from stepvideo_jax.dit.rope import grid_positions, rope_tables
from stepvideo_jax.dit.sharding import DIT_SHARDING
from stepvideo_jax.layers import dense, gelu_tanh, layer_norm, run_layer_stack, sinusoidal_embedding
from stepvideo_jax.sharding import constrain, enters_rules

__all__ = ["StepVideoDiT", "TimestepMLP", "DiTInputs"]


class DiTInputs(NamedTuple):
    """The per-call inputs of the block stack and final layer (see `StepVideoDiT.embed_inputs`)."""

    tokens: jax.Array  # [B, N, D] patch-embedded latents (+ condition)
    emb: jax.Array  # [B, D] timestep (+ motion) embedding, before SiLU
    modulation: jax.Array  # [B, 6, D] the blocks' adaLN shift/scale/gate
    context: jax.Array  # [B, M, D] projected text tokens
    context_mask: jax.Array  # [B, M] valid text keys
    cos: jax.Array  # [N, head_dim] RoPE tables
    sin: jax.Array  # [N, head_dim]
    grid: tuple[int, int, int, int]  # (B, F, H, W) of the latents


class TimestepMLP(nnx.Module):
    """linear -> SiLU -> linear on a sinusoidal embedding (diffusers' `TimestepEmbedding`)."""

    def __init__(self, in_dim: int, dim: int, cfg: DiTConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs, use_bias=True)
        self.linear_1 = dense(in_dim, dim, names=(None, "embed"), **kw)
        self.linear_2 = dense(dim, dim, names=("embed", None), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class StepVideoDiT(nnx.Module):
    SHARDING = DIT_SHARDING  # its logical-axis rules (entered by __call__ / forward under a mesh)

    def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, p = cfg.hidden_size, cfg.patch_size
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, rngs=rngs)
        # A p x p stride-p conv is a dense layer on (p, p, C)-ordered patches.
        self.patch_embed = dense(p * p * cfg.patch_in_channels, d, names=(None, "embed"), use_bias=True, **kw)
        self.time_embedder = TimestepMLP(cfg.timestep_channels, d, cfg, rngs=rngs)
        self.motion_embedder = (
            TimestepMLP(cfg.timestep_channels, d, cfg, rngs=rngs) if cfg.use_additional_conditions else None
        )
        # The large linears (blocks, AdaLN, caption projection) take the weight-only quantization;
        # the small input / output / timestep layers stay in the parameter dtype.
        qkw = dict(kw, quantize=cfg.quantize)
        self.adaln = dense(d, 6 * d, names=("embed", "modulation"), use_bias=True, **qkw)
        llm_ch = cfg.caption_channels[0]
        self.caption_linear_1 = dense(llm_ch, d, names=("caption", "embed"), use_bias=True, **qkw)
        self.caption_linear_2 = dense(d, d, names=("embed", None), use_bias=True, **qkw)
        self.clip_projection = (
            dense(cfg.caption_channels[1], d, names=(None, "embed"), use_bias=True, **kw)
            if len(cfg.caption_channels) == 2
            else None
        )

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def _make_blocks(rngs: nnx.Rngs) -> DiTBlock:
            return DiTBlock(cfg, rngs=rngs)

        self.blocks = _make_blocks(rngs)  # every parameter has a leading [num_layers] axis
        table = jax.random.normal(rngs.params(), (2, d), cfg.jnp_param_dtype) / d**0.5
        self.scale_shift_table = nnx.Param(table, out_sharding=(None, "embed"), eager_sharding=False)
        self.proj_out = dense(d, p * p * cfg.out_channels, names=("embed", None), use_bias=True, **kw)

    # ------------------------------------------------------------------ public API (release layout)
    @enters_rules(DIT_SHARDING)
    def __call__(
        self,
        hidden_states: jax.Array,  # [B, F, C, H, W] noisy latents
        timestep: jax.Array,  # [B] (or scalar) in [0, 1]; 1 = data
        encoder_hidden_states: jax.Array,  # [B, L_llm, caption_channels[0]]
        encoder_attention_mask: jax.Array,  # [B, L_clip + L_llm]
        encoder_hidden_states_2: jax.Array | None = None,  # [B, L_clip, caption_channels[1]]
        condition_hidden_states: jax.Array | None = None,  # [B, F, C, H, W] (TI2V)
        motion_score: jax.Array | float | None = None,  # scalar or [B] (TI2V)
    ) -> jax.Array:
        cfg = self.cfg
        if hidden_states.ndim != 5 or hidden_states.shape[2] != cfg.in_channels:
            raise ValueError(
                f"hidden_states must be (batch, frames, {cfg.in_channels}, height, width); got {tuple(hidden_states.shape)}"
            )
        if condition_hidden_states is not None and condition_hidden_states.shape != hidden_states.shape:
            raise ValueError(
                f"condition_hidden_states must have the shape of hidden_states {tuple(hidden_states.shape)}; "
                f"got {tuple(condition_hidden_states.shape)}"
            )
        to_last = lambda a: None if a is None else jnp.transpose(a, (0, 1, 3, 4, 2))
        out = self.forward(
            to_last(hidden_states),
            timestep,
            encoder_hidden_states,
            encoder_attention_mask,
            encoder_hidden_states_2,
            to_last(condition_hidden_states),
            motion_score,
        )
        return jnp.transpose(out, (0, 1, 4, 2, 3))

    # ------------------------------------------------------------------ channels-last forward
    @enters_rules(DIT_SHARDING)
    def forward(
        self,
        latents: jax.Array,  # [B, F, H, W, C]
        timestep: jax.Array,
        llm_states: jax.Array,  # [B, L_llm, C_llm]
        text_mask: jax.Array,  # [B, L_clip + L_llm]
        clip_states: jax.Array | None = None,  # [B, L_clip, C_clip]
        condition: jax.Array | None = None,  # [B, F, H, W, C]
        motion_score: jax.Array | float | None = None,
        positions: jax.Array | None = None,  # [F*H*W/p^2, 3] RoPE positions (defaults to the full grid)
    ) -> jax.Array:
        inputs = self.embed_inputs(
            latents, timestep, llm_states, text_mask, clip_states, condition, motion_score, positions
        )
        x = self._run_blocks(
            inputs.tokens, inputs.context, inputs.context_mask, inputs.modulation, inputs.cos, inputs.sin
        )
        return self.final_layer(x, inputs)

    # ------------------------------------------------------------------ split forward (for the sampler's caches)
    # forward = final_layer(run_blocks(embed_inputs(...))). A sampler that caches the block stack's
    # residual between steps (stepvideo_jax.diffusion.cache) calls the pieces; the model itself keeps no
    # state between calls and its call signature knows nothing of caching.
    @enters_rules(DIT_SHARDING)
    def embed_inputs(
        self,
        latents: jax.Array,  # [B, F, H, W, C]
        timestep: jax.Array,
        llm_states: jax.Array,  # [B, L_llm, C_llm]
        text_mask: jax.Array,  # [B, L_clip + L_llm]
        clip_states: jax.Array | None = None,  # [B, L_clip, C_clip]
        condition: jax.Array | None = None,  # [B, F, H, W, C]
        motion_score: jax.Array | float | None = None,
        positions: jax.Array | None = None,  # [F*H*W/p^2, 3]
    ) -> DiTInputs:
        """Checks the inputs and computes everything the blocks and the final layer read: the patch
        tokens [B, N, D], the conditioning embedding, the blocks' modulation, the text context and RoPE."""
        cfg = self.cfg
        b, f, h, w, c = self._check_inputs(
            latents, timestep, llm_states, text_mask, clip_states, condition, motion_score
        )
        p, dtype = cfg.patch_size, cfg.jnp_dtype
        hp, wp = h // p, w // p

        x = latents if condition is None else jnp.concatenate([latents, condition], axis=-1)
        # [B, F, H, W, C'] -> [B, F*hp*wp, p*p*C'] with (p, p, C') patch order (conv kernel order).
        cin = x.shape[-1]
        x = x.reshape(b, f, hp, p, wp, p, cin).transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, f * hp * wp, p * p * cin)
        x = constrain(self.patch_embed(x.astype(dtype)), ("batch", "seq", "embed"))  # [B, N, D]

        emb = self._condition_embedding(timestep, motion_score, b)  # [B, D] before SiLU
        modulation = self.adaln(jax.nn.silu(emb)).reshape(b, 6, cfg.hidden_size)  # [B, 6, D]

        context, context_mask = self._text_context(llm_states, text_mask, clip_states)
        if positions is None:
            positions = grid_positions(f, hp, wp)
        # Sharded like the tokens, so each sequence shard computes the tables of its own slice.
        tokens = (("batch", "seq", "heads", "kv"), (b, x.shape[1], cfg.num_heads, cfg.head_dim))
        positions = constrain(positions, ("seq", None), like=tokens)
        cos, sin = rope_tables(positions, cfg.rope_split, cfg.rope_base)  # [N, head_dim]
        cos, sin = (constrain(t, ("seq", "kv"), like=tokens) for t in (cos, sin))
        return DiTInputs(x, emb, modulation, context, context_mask, cos, sin, (b, f, h, w))

    @enters_rules(DIT_SHARDING)
    def run_blocks(self, x: jax.Array, inputs: DiTInputs, start: int = 0, stop: int | None = None) -> jax.Array:
        """Blocks [start, stop) on tokens x [B, N, D] (all of them by default); returns [B, N, D]."""
        cfg = self.cfg
        stop = cfg.num_layers if stop is None else stop
        if not 0 <= start <= stop <= cfg.num_layers:
            raise ValueError(f"block range must satisfy 0 <= start <= stop <= {cfg.num_layers}; got [{start}, {stop})")
        if start == stop:
            return x
        # Fresh modules from the stacked arrays (sliced to the range), so that this also runs inside a
        # transform (lax.cond branch) traced below the level where the model's variables live.
        graphdef, state = nnx.split(self.blocks)
        whole = (start, stop) == (0, cfg.num_layers)
        state = jax.tree.map(lambda a: a if whole else a[start:stop], state)  # new Variables either way
        args = (inputs.context, inputs.context_mask, inputs.modulation, inputs.cos, inputs.sin)
        return self._run_blocks(x, *args, blocks=nnx.merge(graphdef, state), num_layers=stop - start)

    @enters_rules(DIT_SHARDING)
    def final_layer(self, x: jax.Array, inputs: DiTInputs) -> jax.Array:
        """Output norm, modulation and unpatchify: tokens [B, N, D] -> velocity [B, F, H, W, C_out]."""
        cfg = self.cfg
        p, dtype = cfg.patch_size, cfg.jnp_dtype
        b, f, h, w = inputs.grid
        hp, wp = h // p, w // p
        emb = inputs.emb
        shift, scale = (self.scale_shift_table[...][None].astype(emb.dtype) + emb[:, None, :])[:, :, None, :].swapaxes(
            0, 1
        )
        x = layer_norm(x, cfg.norm_eps)
        x = (x * (1 + scale) + shift).astype(dtype)
        x = self.proj_out(x)  # [B, N, p*p*C_out]
        x = x.reshape(b, f, hp, wp, p, p, cfg.out_channels).transpose(0, 1, 2, 4, 3, 5, 6)
        return x.reshape(b, f, h, w, cfg.out_channels)

    # ------------------------------------------------------------------ pieces
    def _check_inputs(self, latents, timestep, llm_states, text_mask, clip_states, condition, motion_score):
        cfg = self.cfg
        if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"latents must be (batch, frames, height, width, {cfg.in_channels}); got {tuple(latents.shape)}"
            )
        b, f, h, w, c = latents.shape
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"latent height/width must be multiples of patch_size {cfg.patch_size}; got {h}x{w}")
        if cfg.use_additional_conditions:
            if condition is None:
                raise ValueError(
                    f"this TI2V model needs condition latents of shape {tuple(latents.shape)} (zeros where there is no image); got None"
                )
            if condition.shape != latents.shape:
                raise ValueError(
                    f"condition latents must have shape {tuple(latents.shape)}; got {tuple(condition.shape)}"
                )
            if motion_score is None:
                raise ValueError("this TI2V model needs motion_score (a scalar or shape (batch,)); got None")
            ms = jnp.asarray(motion_score)
            if ms.ndim > 1 or (ms.ndim == 1 and ms.shape[0] not in (1, b)):
                raise ValueError(f"motion_score must be a scalar or shape ({b},); got shape {tuple(ms.shape)}")
        elif condition is not None:
            raise ValueError("this text-to-video model (use_additional_conditions=False) takes no condition latents")
        ts = jnp.asarray(timestep)
        if ts.ndim > 1 or (ts.ndim == 1 and ts.shape[0] not in (1, b)):
            raise ValueError(f"timestep must be a scalar or shape ({b},); got shape {tuple(ts.shape)}")
        llm_ch = cfg.caption_channels[0]
        if llm_states.ndim != 3 or llm_states.shape[0] != b or llm_states.shape[2] != llm_ch:
            raise ValueError(f"encoder_hidden_states must be ({b}, tokens, {llm_ch}); got {tuple(llm_states.shape)}")
        clip_len = 0
        if clip_states is not None:
            if len(cfg.caption_channels) != 2:
                raise ValueError(
                    "this model has no CLIP projection (caption_channels has one entry) but got CLIP states"
                )
            clip_ch = cfg.caption_channels[1]
            if clip_states.ndim != 3 or clip_states.shape[0] != b or clip_states.shape[2] != clip_ch:
                raise ValueError(
                    f"encoder_hidden_states_2 must be ({b}, tokens, {clip_ch}); got {tuple(clip_states.shape)}"
                )
            clip_len = clip_states.shape[1]
        expected_mask = (b, clip_len + llm_states.shape[1])
        if tuple(text_mask.shape) != expected_mask:
            raise ValueError(
                f"encoder_attention_mask must be {expected_mask} (CLIP tokens + LLM tokens); got {tuple(text_mask.shape)}"
            )
        return b, f, h, w, c

    def _condition_embedding(self, timestep, motion_score, b: int) -> jax.Array:
        cfg = self.cfg
        pdt = cfg.jnp_param_dtype
        t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32).reshape(-1), (b,))
        t_proj = sinusoidal_embedding(t * cfg.timestep_scale, cfg.timestep_channels).astype(pdt)
        emb = self.time_embedder(t_proj)
        if self.motion_embedder is not None:
            ms = jnp.broadcast_to(jnp.asarray(motion_score, jnp.float32).reshape(-1), (b,))
            emb = emb + self.motion_embedder(sinusoidal_embedding(ms, cfg.timestep_channels).astype(pdt))
        return emb  # [B, D]

    def _text_context(self, llm_states, text_mask, clip_states):
        cfg = self.cfg
        dtype = cfg.jnp_dtype
        llm = layer_norm(llm_states.astype(dtype), cfg.norm_eps)
        context = self.caption_linear_2(gelu_tanh(self.caption_linear_1(llm)))  # [B, L_llm, D]
        if clip_states is not None:
            # CLIP tokens go BEFORE the LLM tokens.
            context = jnp.concatenate([self.clip_projection(clip_states.astype(dtype)), context], axis=1)
        # As released, the mask only counts valid keys: each sample keeps its first n keys, where n is
        # the mask's sum (77 CLIP tokens, padding included, + the valid LLM tokens).
        n_valid = jnp.sum(text_mask, axis=1).astype(jnp.int32)  # [B]
        context_mask = jnp.arange(context.shape[1])[None, :] < n_valid[:, None]  # [B, M]
        return constrain(context, ("batch", "context", "embed")), context_mask

    def _run_blocks(self, x, context, context_mask, modulation, cos, sin, *, blocks=None, num_layers=None):
        cfg = self.cfg

        def layer(block: DiTBlock, x: jax.Array) -> jax.Array:
            return block(x, context, context_mask, modulation, cos, sin)

        blocks = self.blocks if blocks is None else blocks
        num_layers = cfg.num_layers if num_layers is None else num_layers
        return run_layer_stack(blocks, x, layer, num_layers=num_layers, scan=cfg.scan_layers, remat=cfg.remat_policy)
