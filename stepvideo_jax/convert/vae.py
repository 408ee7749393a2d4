"""Key table: released Video-VAE v2 (`vae/vae_v2.safetensors`, `AutoencoderKL(version=2)`) -> `VideoVAE`.

The release wraps most convs in a causal module, so its keys end in `X.conv.weight`; ours keep the
kernel on the conv module itself (`X.kernel`). The released file stores the decoder's last conv as
`decoder.conv_out.*` while the torch module holds it at `decoder.conv_out.conv.*`; both spellings
are accepted. Resamplers are `down.N.downsample` / `up.N.upsample` there, `down.N.resample` /
`up.N.resample` here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from stepvideo_jax.convert.core import ConversionError, Rule, TensorSource, build_model, convert, flat_param_paths
from stepvideo_jax.vae.config import VAEConfig
from stepvideo_jax.vae.model import VideoVAE

__all__ = ["VAE_KEYS", "conv_kernel", "convert_vae", "load_vae", "release_shapes", "to_release_keys"]


def conv_kernel(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """torch Conv3d (out, in, kt, kh, kw) -> (kt, kh, kw, in, out); Conv2d (out, in, kh, kw) -> (kh, kw, in, out)."""
    if a.ndim == 5:
        return a.transpose(2, 3, 4, 1, 0)
    if a.ndim == 4:
        return a.transpose(2, 3, 1, 0)
    return a  # let the shape check report it


_RESAMPLE = r"(?P<p>(?:encoder\.down|decoder\.up)\.\d+)\.(?:downsample|upsample)"

VAE_KEYS: list[Rule] = [
    # The released file's spelling of the decoder's final conv, and the module's.
    Rule(r"decoder\.conv_out(?:\.conv)?\.weight", "decoder.conv_out.kernel", conv_kernel),
    Rule(r"decoder\.conv_out(?:\.conv)?\.bias", "decoder.conv_out.bias"),
    # Plain per-frame Conv2d of Downsample2D / Upsample2D (no causal wrapper).
    Rule(_RESAMPLE + r"\.conv\.weight", "{p}.resample.conv.kernel", conv_kernel),
    Rule(_RESAMPLE + r"\.conv\.bias", "{p}.resample.conv.bias"),
    # Causal 3D conv of Downsample3D, and Upsample3D's residual block.
    Rule(_RESAMPLE + r"\.conv\.conv\.weight", "{p}.resample.conv.kernel", conv_kernel),
    Rule(_RESAMPLE + r"\.conv\.conv\.bias", "{p}.resample.conv.bias"),
    Rule(_RESAMPLE + r"\.conv3d\.(?P<c>conv[12])\.conv\.weight", "{p}.resample.conv3d.{c}.kernel", conv_kernel),
    Rule(_RESAMPLE + r"\.conv3d\.(?P<c>conv[12])\.conv\.bias", "{p}.resample.conv3d.{c}.bias"),
    Rule(_RESAMPLE + r"\.conv3d\.(?P<n>norm[12])\.weight", "{p}.resample.conv3d.{n}.scale"),
    Rule(_RESAMPLE + r"\.conv3d\.(?P<n>norm[12])\.bias", "{p}.resample.conv3d.{n}.bias"),
    # Every other conv sits in a causal wrapper: X.conv.{weight,bias} -> X.{kernel,bias}.
    Rule(r"(?P<p>.+)\.conv\.weight", "{p}.kernel", conv_kernel),
    Rule(r"(?P<p>.+)\.conv\.bias", "{p}.bias"),
    # GroupNorms.
    Rule(r"(?P<p>.+\.norm\w*)\.weight", "{p}.scale"),
    Rule(r"(?P<p>.+\.norm\w*)\.bias", "{p}.bias"),
]


@functools.lru_cache(maxsize=8)
def _param_paths(cfg: VAEConfig) -> dict:
    return flat_param_paths(nnx.eval_shape(lambda: VideoVAE(cfg, rngs=nnx.Rngs(0))))


def convert_vae(tensors, cfg: VAEConfig, *, dtype=None) -> dict:
    """Released VAE tensors -> {nnx path: array} for `VideoVAE(cfg)`."""
    return convert(tensors, VAE_KEYS, _param_paths(cfg), dtype=dtype)


def load_vae(
    weights: str | os.PathLike | Mapping,
    config: VAEConfig | Mapping[str, Any] | None = None,
    **overrides,
) -> VideoVAE:
    """Loads a released Video-VAE v2: `weights` is `vae/vae_v2.safetensors` (or the `vae/` folder,
    or a {key: array} mapping); `config` a VAEConfig, the release's constructor arguments, or None
    for the released model."""
    if config is None:
        cfg = VAEConfig.real(**overrides)
    elif isinstance(config, VAEConfig):
        cfg = config
    else:
        cfg = VAEConfig.from_release(config, **overrides)
    if isinstance(weights, Mapping):
        tensors = weights
    else:
        path = os.fspath(weights)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "vae_v2.safetensors")):
            path = os.path.join(path, "vae_v2.safetensors")
        tensors = TensorSource(path)
    arrays = convert_vae(tensors, cfg)
    return build_model(lambda: VideoVAE(cfg, rngs=nnx.Rngs(0)), arrays)


def _release_key(name: str, kernel_ndim: dict[str, int]) -> str:
    """Our parameter path -> the released file's key (the inverse of VAE_KEYS)."""
    stem, leaf = name.rsplit(".", 1)
    key_stem = stem.replace(".resample", ".downsample" if stem.startswith("encoder.") else ".upsample")
    if stem.rsplit(".", 1)[-1].startswith("norm"):
        return f"{key_stem}.{'weight' if leaf == 'scale' else 'bias'}"
    suffix = "weight" if leaf == "kernel" else "bias"
    plain = stem == "decoder.conv_out" or kernel_ndim[stem] == 4  # no causal wrapper in the release
    return f"{key_stem}.{suffix}" if plain else f"{key_stem}.conv.{suffix}"


def _release_table(flat: dict[str, tuple[int, ...]]) -> dict[str, str]:
    kernel_ndim = {n.rsplit(".", 1)[0]: len(shape) for n, shape in flat.items() if n.endswith(".kernel")}
    table = {name: _release_key(name, kernel_ndim) for name in flat}
    if len(set(table.values())) != len(table):
        raise ConversionError("two parameters map to the same release key")
    return table


def _torch_layout(a, name: str):
    if not name.endswith(".kernel"):
        return a
    return a.transpose(4, 3, 0, 1, 2) if a.ndim == 5 else a.transpose(3, 2, 0, 1)


def release_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """{release key: torch shape} of the released file for `cfg` (no weights are built)."""
    flat = {n: shape for n, (shape, _) in _param_paths(cfg).items()}
    return {key: tuple(_torch_layout(np.empty(flat[n], np.int8), n).shape) for n, key in _release_table(flat).items()}


def to_release_keys(model: VideoVAE) -> dict[str, np.ndarray]:
    """Our parameters under the released file's key names and torch layouts (writes test fixtures
    with other widths; `load_vae` of the result gives the same model)."""
    flat = {
        ".".join(str(p) for p in path): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    table = _release_table({n: a.shape for n, a in flat.items()})
    return {table[n]: np.ascontiguousarray(_torch_layout(a, n)) for n, a in flat.items()}
