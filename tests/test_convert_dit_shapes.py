"""The one release DiT key -> shape table (`release_dit_shapes`), derived from the converter's DIT_RULES."""

import json

import numpy as np
import pytest
from safetensors import safe_open

from stepvideo_jax.convert.dit import convert_dit, release_dit_shapes
from stepvideo_jax.dit import DiTConfig


@pytest.mark.parametrize("name", ["dit_ti2v", "dit_t2v"])
def test_shapes_are_the_released_state_dict(fixture_prefix, name):
    """The fixtures were written by the released PyTorch model: every key and shape must agree."""
    prefix = fixture_prefix(name)
    with open(prefix + ".json") as f:
        config = json.load(f)["config"]
    with safe_open(prefix + ".weights.safetensors", "np") as f:
        released = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    shapes = release_dit_shapes(DiTConfig.from_release(config))
    assert shapes == released
    # Non-block keys first, then layer by layer.
    is_block = [k.startswith("transformer_blocks.") for k in shapes]
    layers = [int(k.split(".")[1]) for k in shapes if k.startswith("transformer_blocks.")]
    assert is_block == sorted(is_block) and layers == sorted(layers)


@pytest.mark.parametrize(
    "cfg",
    [
        DiTConfig(
            num_heads=3,
            head_dim=32,
            in_channels=4,
            out_channels=4,
            num_layers=3,
            patch_size=2,
            caption_channels=(48, 24),
            rope_split=(16, 8, 8),
            use_additional_conditions=True,
        ),
        DiTConfig(
            num_heads=1,
            head_dim=32,
            in_channels=6,
            out_channels=5,
            num_layers=1,
            patch_size=1,
            caption_channels=(40,),
            rope_split=(16, 8, 8),
            use_additional_conditions=False,
        ),
    ],
)
def test_converter_accepts_the_table(cfg):
    shapes = release_dit_shapes(cfg)
    assert shapes["pos_embed.proj.weight"] == (cfg.hidden_size, cfg.patch_in_channels, cfg.patch_size, cfg.patch_size)
    assert shapes["transformer_blocks.0.attn1.wo.weight"] == (cfg.hidden_size, cfg.hidden_size)
    assert ("clip_projection.weight" in shapes) == (len(cfg.caption_channels) == 2)
    assert any("motion_score_embedder" in k for k in shapes) == cfg.use_additional_conditions
    arrays = convert_dit({k: np.zeros(s, np.float32) for k, s in shapes.items()}, cfg)  # raises on any mismatch
    wqkv = arrays["blocks.attn1.wqkv.kernel"]
    assert wqkv.shape == (cfg.num_layers, cfg.hidden_size, cfg.num_heads, 3 * cfg.head_dim)
