"""Frozen configuration of the Step-Video Video-VAE version 2 (one dataclass for tiny and real)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from stepvideo_jax.config import DtypeFields, dtype_from_name

__all__ = ["VAEConfig"]


@dataclasses.dataclass(frozen=True)
class VAEConfig(DtypeFields):
    in_channels: int = 3
    out_channels: int = 3
    z_channels: int = 64
    num_res_blocks: int = 2
    encoder_ch: int = 32
    encoder_ch_mult: tuple[int, ...] = (4, 8, 16, 16)
    # Encoder levels whose downsample is a causal stride-2 conv in time and space (the others,
    # except the last level which has none, downsample 2x in space only).
    encoder_temporal_down_layers: tuple[int, ...] = (1, 2)
    decoder_ch: int = 128
    decoder_ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    # Decoder levels whose upsample is a nearest 3D (time and space) interpolation + residual block.
    decoder_temporal_up_layers: tuple[int, ...] = (2, 3)
    # The decoder drops the first `temporal_downsample - 1` frames of every chunk.
    decoder_temporal_downsample: int = 4
    frame_len: int = 17  # video frames per encoder chunk
    latent_len: int = 3  # latent frames per decoder chunk
    norm_groups: int = 32
    norm_eps: float = 1e-5  # torch.nn.GroupNorm default
    logvar_clip: tuple[float, float] = (-30.0, 20.0)
    blend_keep: float = 0.6  # chunk-boundary mix: b = keep*b + (1-keep)*a, then a likewise
    # The latents the VAE hands out (encode) and takes (decode) are its own times this; 1.0 in the
    # release. A model trained here sets it so that its DiT sees latents of the scale the unit-variance
    # noise schedule was tuned for (the demo recipe's `latent_std`); stored as "scaling_factor".
    latent_scale: float = 1.0
    # Runtime knobs (not part of the released config).
    param_dtype: str = "float32"
    dtype: str = "float32"
    attention_block: int = 2048  # query rows per step of the causal mid-block attention
    # How a 3x3x3 causal conv runs: "conv3d" (one 3D conv), "frame_taps" (one batched 2D conv per
    # temporal tap, summed: the same sums, 2-8x faster on XLA:CPU, whose 3D convs and their
    # gradients take a slow generic path), or "auto" (frame_taps on CPU, conv3d elsewhere).
    conv_impl: str = "auto"

    def __post_init__(self):
        dtype_from_name(self.param_dtype)
        dtype_from_name(self.dtype)
        if not (math.isfinite(self.latent_scale) and self.latent_scale > 0):
            raise ValueError(f"latent_scale must be a finite number > 0; got {self.latent_scale}")
        if self.conv_impl not in ("auto", "conv3d", "frame_taps"):
            raise ValueError(f"conv_impl must be 'auto', 'conv3d' or 'frame_taps'; got {self.conv_impl!r}")
        for name in ("encoder_ch_mult", "decoder_ch_mult"):
            if len(getattr(self, name)) < 1:
                raise ValueError(f"{name} must have at least one level")
        widths = [self.encoder_ch * m for m in self.encoder_ch_mult] + [
            self.decoder_ch * m for m in self.decoder_ch_mult
        ]
        if any(w % self.norm_groups for w in widths) or self.encoder_ch % self.norm_groups:
            raise ValueError(f"every level width {widths} must be a multiple of norm_groups {self.norm_groups}")
        if (8 * self.encoder_width) % self.patch_channels or (8 * self.decoder_width) % self.patch_channels:
            raise ValueError(
                f"8 x the innermost widths (encoder {self.encoder_width}, decoder {self.decoder_width}) must be "
                f"multiples of the patchify channels 32*z_channels = {self.patch_channels}"
            )
        n = len(self.encoder_ch_mult)
        if any(not 0 <= i < n - 1 for i in self.encoder_temporal_down_layers):
            raise ValueError(
                f"encoder_temporal_down_layers {self.encoder_temporal_down_layers} must lie in [0, {n - 2}]"
            )
        m = len(self.decoder_ch_mult)
        if any(not 0 < i < m for i in self.decoder_temporal_up_layers):
            raise ValueError(f"decoder_temporal_up_layers {self.decoder_temporal_up_layers} must lie in [1, {m - 1}]")
        if self.spatial_factor != self.decoder_spatial_factor:
            raise ValueError(
                f"encoder spatial factor {self.spatial_factor} != decoder spatial factor {self.decoder_spatial_factor}"
            )
        for frames, latents in ((self.frame_len, self.latent_len), (1, 1)):
            if self.encoded_frames(frames) != latents:
                raise ValueError(
                    f"the encoder maps {frames} frames to {self.encoded_frames(frames)} latent frames, not {latents}"
                )
            if self.decoded_frames(latents) != frames:
                raise ValueError(
                    f"the decoder maps {latents} latent frames to {self.decoded_frames(latents)} frames, not {frames}"
                )

    # ------------------------------------------------------------------ derived sizes
    @property
    def patch_channels(self) -> int:
        """Channels between the patchify convs and the latent (4 * z * 2^3 in the release)."""
        return 4 * self.z_channels * 8

    @property
    def encoder_width(self) -> int:
        return self.encoder_ch * self.encoder_ch_mult[-1]

    @property
    def decoder_width(self) -> int:
        return self.decoder_ch * self.decoder_ch_mult[-1]

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along height/width: 2 per non-last encoder level, 2 for the patchify."""
        return 2 ** (len(self.encoder_ch_mult) - 1) * 2

    @property
    def decoder_spatial_factor(self) -> int:
        return 2 ** (len(self.decoder_ch_mult) - 1) * 2

    def encoded_frames(self, frames: int) -> int:
        """Latent frames of one encoder chunk of `frames` frames."""
        for _ in self.encoder_temporal_down_layers:
            frames = (frames - 1) // 2 + 1  # causal stride-2 conv, 2 frames of front padding
        return (frames + 1) // 2  # pixel-unshuffle with one frame of front padding

    def decoded_frames(self, latents: int) -> int:
        """Frames of one decoder chunk of `latents` latent frames."""
        frames = 2 * latents - 1  # pixel-shuffle drops its first frame
        frames *= 2 ** len(self.decoder_temporal_up_layers)
        return frames - (self.decoder_temporal_downsample - 1)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def real(cls, **overrides) -> VAEConfig:
        """The released `vae_v2.safetensors` model (AutoencoderKL version 2, z_channels 64)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> VAEConfig:
        """The reference fixture's widths: a few MB, same structure as the real model."""
        fields = dict(
            z_channels=4,
            encoder_ch=32,
            encoder_ch_mult=(1, 1, 2, 2),
            decoder_ch=32,
            decoder_ch_mult=(1, 1, 2, 2),
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_release(cls, cfg: Mapping[str, Any], **overrides) -> VAEConfig:
        """From the release's constructor arguments as the fixtures record them:
        {version, z_channels, in_channels, out_channels, num_res_blocks, encoder: {ch, ch_mult,
        down_sampling_layer}, decoder: {ch, ch_mult, temporal_up_layers, temporal_downsample},
        frame_len, latent_len} (+ "scaling_factor", written only by models trained here). Missing fields
        take the released defaults."""
        version = int(cfg.get("version", 2))
        if version != 2:
            raise ValueError(f"only Video-VAE version 2 is implemented; got version {version}")
        enc = cfg.get("encoder") or {}
        dec = cfg.get("decoder") or {}
        fields = dict(
            in_channels=int(cfg.get("in_channels", 3)),
            out_channels=int(cfg.get("out_channels", 3)),
            z_channels=int(cfg.get("z_channels", 64)),
            num_res_blocks=int(cfg.get("num_res_blocks", 2)),
            encoder_ch=int(enc.get("ch", 32)),
            encoder_ch_mult=tuple(int(m) for m in enc.get("ch_mult", (4, 8, 16, 16))),
            encoder_temporal_down_layers=tuple(int(i) for i in enc.get("down_sampling_layer", (1, 2))),
            decoder_ch=int(dec.get("ch", 128)),
            decoder_ch_mult=tuple(int(m) for m in dec.get("ch_mult", (1, 2, 4, 4))),
            decoder_temporal_up_layers=tuple(int(i) for i in dec.get("temporal_up_layers", (2, 3))),
            decoder_temporal_downsample=int(dec.get("temporal_downsample", 4)),
            frame_len=int(cfg.get("frame_len", 17)),
            latent_len=int(cfg.get("latent_len", 3)),
            norm_groups=int(cfg.get("norm_groups", 32)),
            latent_scale=float(cfg.get("scaling_factor", 1.0)),
        )
        fields.update(overrides)
        return cls(**fields)

    def to_release(self) -> dict[str, Any]:
        """The inverse of `from_release` (the fixtures' config layout)."""
        out = {
            "version": 2,
            "z_channels": self.z_channels,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_res_blocks": self.num_res_blocks,
            "encoder": {
                "ch": self.encoder_ch,
                "ch_mult": list(self.encoder_ch_mult),
                "down_sampling_layer": list(self.encoder_temporal_down_layers),
            },
            "decoder": {
                "ch": self.decoder_ch,
                "ch_mult": list(self.decoder_ch_mult),
                "temporal_up_layers": list(self.decoder_temporal_up_layers),
                "temporal_downsample": self.decoder_temporal_downsample,
            },
            "frame_len": self.frame_len,
            "latent_len": self.latent_len,
            "norm_groups": self.norm_groups,  # not a release argument (always 32 there); kept for small models
        }
        if self.latent_scale != 1.0:  # release configs stay as they were
            out["scaling_factor"] = self.latent_scale
        return out
