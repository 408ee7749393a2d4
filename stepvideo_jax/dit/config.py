"""Frozen configuration of the Step-Video DiT (one dataclass for T2V, TI2V, tiny and 30B)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stepvideo_jax.config import DtypeFields, dtype_from_name, remat_policy
from stepvideo_jax.layers.quantized import check_quantize_mode

__all__ = ["DiTConfig"]


@dataclasses.dataclass(frozen=True)
class DiTConfig(DtypeFields):
    num_heads: int = 48
    head_dim: int = 128
    in_channels: int = 64
    out_channels: int = 64
    num_layers: int = 48
    patch_size: int = 1
    norm_eps: float = 1e-6  # final LayerNorm and caption LayerNorm
    block_norm_eps: float = 1e-5  # LayerNorms inside each block
    qk_norm_eps: float = 1e-6
    ffn_mult: int = 4
    # TI2V: patch embed takes [noisy | condition] latents and a motion-score embedding is added.
    use_additional_conditions: bool = True
    # (Step-LLM width, CLIP width); a single entry means no CLIP projection.
    caption_channels: tuple[int, ...] = (6144, 1024)
    timestep_channels: int = 256
    timestep_scale: float = 1000.0
    rope_split: tuple[int, int, int] = (64, 32, 32)  # head_dim channels for (frame, height, width)
    rope_base: float = 10000.0
    # Runtime knobs (not part of the released config).
    param_dtype: str = "float32"
    dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_kernel: str = "xla"
    # Weight-only quantization of the large linears: "none", "int8" or "fp8" (e4m3), per-output-channel
    # scales (see `stepvideo_jax.layers.quantized`). It decides the stored weights, so it is written
    # to the manifest's config (only when not "none", keeping float manifests as they were).
    quantize: str = "none"

    def __post_init__(self):
        if sum(self.rope_split) != self.head_dim:
            raise ValueError(f"rope_split {self.rope_split} must sum to head_dim {self.head_dim}")
        if any(c % 2 for c in self.rope_split):
            raise ValueError(f"rope_split {self.rope_split} entries must be even")
        if len(self.caption_channels) not in (1, 2):
            raise ValueError(f"caption_channels must be (llm,) or (llm, clip); got {self.caption_channels}")
        dtype_from_name(self.param_dtype)
        dtype_from_name(self.dtype)
        remat_policy(self.remat_policy)
        check_quantize_mode(self.quantize)

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def patch_in_channels(self) -> int:
        return self.in_channels * (2 if self.use_additional_conditions else 1)

    @classmethod
    def from_release(cls, cfg: Mapping[str, Any], **overrides) -> DiTConfig:
        """Builds the config from the release's `transformer/config.json` fields."""
        if cfg.get("norm_type", "ada_norm_single") != "ada_norm_single":
            raise ValueError(f"unsupported norm_type {cfg.get('norm_type')!r}; expected 'ada_norm_single'")
        caption = cfg.get("caption_channels", [6144, 1024])
        caption = (int(caption),) if isinstance(caption, int) else tuple(int(c) for c in caption)
        in_ch = int(cfg.get("in_channels", 64))
        out_ch = cfg.get("out_channels")
        fields = dict(
            num_heads=int(cfg.get("num_attention_heads", 48)),
            head_dim=int(cfg.get("attention_head_dim", 128)),
            in_channels=in_ch,
            out_channels=in_ch if out_ch is None else int(out_ch),
            num_layers=int(cfg.get("num_layers", 48)),
            patch_size=int(cfg.get("patch_size", 1)),
            norm_eps=float(cfg.get("norm_eps", 1e-6)),
            use_additional_conditions=bool(cfg.get("use_additional_conditions", False)),
            caption_channels=caption,
        )
        if "rope_split" in cfg:  # not a release field (fixed there); written for other head sizes
            fields["rope_split"] = tuple(int(c) for c in cfg["rope_split"])
        if "quantize" in cfg:  # not a release field: written for weight-only quantized conversions
            fields["quantize"] = str(cfg["quantize"])
        fields.update(overrides)
        return cls(**fields)

    def to_release(self) -> dict[str, Any]:
        """The release's config.json fields for this model."""
        quantize = {} if self.quantize == "none" else {"quantize": self.quantize}
        return quantize | {
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_layers": self.num_layers,
            "dropout": 0.0,
            "patch_size": self.patch_size,
            "norm_type": "ada_norm_single",
            "norm_elementwise_affine": False,
            "norm_eps": self.norm_eps,
            "use_additional_conditions": self.use_additional_conditions,
            "caption_channels": list(self.caption_channels),
            "rope_split": list(self.rope_split),
        }
