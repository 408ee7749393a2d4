"""The Video-VAE v2: parity with the released PyTorch model, chunking, shape rules, converter."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import vae_reference
from safetensors.numpy import load_file, save_file

from stepvideo_jax.convert import ConversionError
from stepvideo_jax.convert.vae import convert_vae, load_vae, release_shapes, to_release_keys
from stepvideo_jax.parity.fixtures import load_fixture
from stepvideo_jax.tools import parity
from stepvideo_jax.vae import VAEConfig
from stepvideo_jax.vae.model import blend_chunk_boundaries, tiled_map


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def fixture(fixture_prefix):
    return load_fixture(fixture_prefix("vae_v2"))


@pytest.fixture(scope="module")
def model(fixture):
    return load_vae(fixture.weights_path, fixture.config)


# ---------------------------------------------------------------------------------------- config
def test_config_from_release_and_derived_sizes(fixture):
    cfg = VAEConfig.from_release(fixture.config)
    assert cfg == VAEConfig.tiny()
    assert VAEConfig.from_release(cfg.to_release()) == cfg
    real = VAEConfig.real()
    assert (real.encoder_width, real.decoder_width, real.patch_channels) == (512, 512, 2048)
    assert (real.spatial_factor, real.encoded_frames(17), real.decoded_frames(3)) == (16, 3, 17)
    assert (real.encoded_frames(1), real.decoded_frames(1)) == (1, 1)
    with pytest.raises(ValueError, match="version 2"):
        VAEConfig.from_release({"version": 1})
    with pytest.raises(ValueError, match="maps 17 frames to"):
        VAEConfig.tiny(encoder_temporal_down_layers=(1,))


# ---------------------------------------------------------------------------------------- parity
def test_parity_with_release_fixture(fixture_prefix):
    results = {n: rel for n, _, rel in parity.check_fixture(fixture_prefix("vae_v2"))}
    assert set(results) == {"moments", "mean", "decoded", "image_moments"}
    assert max(results.values()) <= 1e-5, results


def _other_config() -> VAEConfig:
    # 3 levels (spatial factor 8), a time+space downsample at level 0, z 2, narrower decoder.
    return VAEConfig(
        z_channels=2,
        encoder_ch=32,
        encoder_ch_mult=(1, 1, 2),
        encoder_temporal_down_layers=(0, 1),
        decoder_ch=32,
        decoder_ch_mult=(1, 2, 2),
        decoder_temporal_up_layers=(1, 2),
    )


def _random_release_weights(cfg: VAEConfig, seed: int) -> dict:
    """Random weights under the release's key names (biases and norm affines non-trivial)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in release_shapes(cfg).items():
        if len(shape) >= 4:
            v = rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))
        elif ".norm" in key and key.endswith("weight"):
            v = 1.0 + 0.2 * rng.normal(size=shape)
        else:
            v = 0.1 * rng.normal(size=shape)
        out[key] = v.astype(np.float32)
    return out


def test_parity_tool_on_other_widths_against_numpy_reference(tmp_path, capsys):
    """Other widths, levels, latent channels and resolution: expected outputs from the independent
    float64 NumPy forward (itself checked against the PyTorch fixture in the slow test below)."""
    cfg = _other_config()
    weights = _random_release_weights(cfg, seed=3)
    rel_cfg = cfg.to_release()
    rng = np.random.default_rng(4)
    video = rng.uniform(-1, 1, size=(1, 34, 3, 8, 24)).astype(np.float32)  # 2 chunks, 8x24 pixels
    moments = vae_reference.encode_moments(weights, rel_cfg, video)
    mean = moments[:, :, : cfg.z_channels].astype(np.float32)
    io = {
        "video": video,
        "moments": moments.astype(np.float32),
        "mean": mean,
        "decoded": vae_reference.decode(weights, rel_cfg, mean).astype(np.float32),
    }
    io = {k: np.ascontiguousarray(v) for k, v in io.items()}  # safetensors writes the raw buffer
    assert io["moments"].shape == (1, 6, 4, 1, 3) and io["decoded"].shape == video.shape
    prefix = str(tmp_path / "vae_other")
    with open(prefix + ".json", "w") as f:
        json.dump({"kind": "vae_v2", "config": rel_cfg}, f)
    save_file(weights, prefix + ".weights.safetensors")
    save_file(io, prefix + ".io.safetensors")
    results = {n: rel for n, _, rel in parity.check_fixture(prefix)}
    assert set(results) == {"moments", "mean", "decoded"}
    assert max(results.values()) <= 1e-5, results
    # The converter's inverse gives back the same file.
    back = to_release_keys(load_vae(weights, rel_cfg))
    assert sorted(back) == sorted(weights) and all(np.array_equal(back[k], weights[k]) for k in weights)


@pytest.mark.skipif(
    not os.environ.get("STEPVIDEO_SLOW_TESTS"), reason="about 30 s of NumPy; set STEPVIDEO_SLOW_TESTS=1"
)
def test_numpy_reference_matches_release_fixture(fixture):
    """Pins the NumPy reference to the PyTorch fixture."""
    cfg = fixture.config
    W = load_file(fixture.weights_path)
    assert (
        rel_l2(vae_reference.encode_moments(W, cfg, fixture.tensor("image")), fixture.tensor("image_moments")) <= 1e-5
    )
    assert rel_l2(vae_reference.encode_moments(W, cfg, fixture.tensor("video")), fixture.tensor("moments")) <= 1e-5
    assert rel_l2(vae_reference.decode(W, cfg, fixture.tensor("mean")), fixture.tensor("decoded")) <= 1e-5


# ---------------------------------------------------------------------------------------- chunking
def test_chunks_in_one_program_equal_separate_decodes_then_blend(model, fixture):
    mean = jnp.asarray(fixture.tensor("mean"))  # (1, 6, z, 2, 2): two chunks of 3 latent frames
    together = np.asarray(model.decode(mean))
    batched = np.asarray(model.decode(mean, sequential=False))
    a = np.asarray(model.decode(mean[:, :3]), np.float64)
    b = np.asarray(model.decode(mean[:, 3:]), np.float64)
    assert a.shape[1] == b.shape[1] == 17
    last, first = a[:, -1].copy(), b[:, 0].copy()
    first = 0.6 * first + 0.4 * last
    last = 0.6 * last + 0.4 * first
    a[:, -1], b[:, 0] = last, first
    expected = np.concatenate([a, b], axis=1)
    assert np.max(np.abs(together - expected)) <= 1e-5
    assert rel_l2(together, expected) <= 1e-6
    assert rel_l2(batched, expected) <= 1e-6


def test_latent_scale_scales_what_encode_gives_and_decode_takes(model, fixture):
    """`latent_scale` s: encode gives s x the VAE's own latents (mean and posterior sample), decode
    takes them back to the same video; stored as "scaling_factor", absent from release configs. The
    scale is a power of two, so scaling and unscaling are exact in float32 and the videos equal."""
    import dataclasses

    from flax import nnx

    assert "scaling_factor" not in model.cfg.to_release()
    cfg = dataclasses.replace(model.cfg, latent_scale=0.5)
    assert VAEConfig.from_release(cfg.to_release()) == cfg and cfg.to_release()["scaling_factor"] == 0.5
    graphdef, state = nnx.split(model)
    scaled = nnx.merge(graphdef, state)
    scaled.cfg = cfg
    video = jnp.asarray(fixture.tensor("video"))
    key = jax.random.key(3)
    for rng in (None, key):
        own = np.asarray(model.encode(video, rng=rng), np.float64)
        np.testing.assert_allclose(np.asarray(scaled.encode(video, rng=rng)), 0.5 * own, rtol=0, atol=0)
    mean = jnp.asarray(fixture.tensor("mean"))
    expected = np.asarray(model.decode(mean))
    np.testing.assert_array_equal(np.asarray(scaled.decode(mean * 0.5)), expected)
    assert np.max(np.abs(np.asarray(scaled.decode(mean)) - expected)) > 1e-3  # the scale is not ignored
    with pytest.raises(ValueError, match="latent_scale"):
        VAEConfig.tiny(latent_scale=0.0)


def test_blend_chunk_boundaries_three_chunks():
    x = np.arange(3 * 4, dtype=np.float32).reshape(1, 12, 1) * 10.0  # 3 chunks of 4 frames
    y = np.asarray(blend_chunk_boundaries(jnp.asarray(x), 4, 0.6))
    for k in (4, 8):
        a, b = x[0, k - 1, 0], x[0, k, 0]
        nb = 0.6 * b + 0.4 * a
        assert y[0, k, 0] == pytest.approx(nb) and y[0, k - 1, 0] == pytest.approx(0.6 * a + 0.4 * nb)
    untouched = [i for i in range(12) if i not in (3, 4, 7, 8)]
    np.testing.assert_array_equal(y[0, untouched], x[0, untouched])


def test_tiled_map_reproduces_a_local_function():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 3, 8, 11, 4)).astype(np.float32))
    mix = jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))

    def fn(z):  # local: nearest 4x upsample + per-pixel channel mixing, 3 -> 2 frames
        up = jnp.repeat(jnp.repeat(z, 4, axis=2), 4, axis=3)
        return jnp.einsum("bthwc,cd->bthwd", up, mix)[:, 1:]

    out = jax.jit(lambda z: tiled_map(fn, z, (3, 5), 1, 4))(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(fn(x)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- API
def test_posterior_sample_is_seeded_mean_plus_std_noise(model, fixture):
    image = jnp.asarray(fixture.tensor("image"))
    key = jax.random.key(7)
    moments = np.asarray(model.encode_moments(image))
    mean, logvar = moments[:, :, :4], moments[:, :, 4:]
    sample = np.asarray(model.encode(image, rng=key))
    noise = np.asarray(jax.random.normal(key, (1, 1, 2, 2, 4))).transpose(0, 1, 4, 2, 3)
    np.testing.assert_allclose(sample, mean + np.exp(0.5 * np.clip(logvar, -30, 20)) * noise, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(model.encode(image, rng=key)), sample)
    np.testing.assert_array_equal(np.asarray(model.encode(image)), mean)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 16, 3, 32, 32), "frames must be 1 or a multiple of 17; got 16"),
        ((1, 18, 3, 32, 32), "frames must be 1 or a multiple of 17; got 18"),
        ((1, 17, 3, 24, 32), "height and width must be positive multiples of 16; got 24x32"),
        ((1, 17, 3, 32, 40), "multiples of 16; got 32x40"),
        ((1, 17, 4, 32, 32), r"video must be \(batch, frames, 3, height, width\)"),
    ],
)
def test_bad_video_shapes_raise(model, shape, message):
    with pytest.raises(ValueError, match=message):
        model.encode(jnp.zeros(shape))


def test_bad_latent_shapes_raise(model):
    with pytest.raises(ValueError, match="latent frames must be 1 or a multiple of 3; got 4"):
        model.decode(jnp.zeros((1, 4, 4, 2, 2)))
    with pytest.raises(ValueError, match=r"latents must be \(batch, frames, 4, height, width\)"):
        model.decode(jnp.zeros((1, 3, 8, 2, 2)))
    with pytest.raises(ValueError, match="larger than overlap"):
        model.decode(jnp.zeros((1, 3, 4, 2, 2)), tile=(2, 2), overlap=2)


# ---------------------------------------------------------------------------------------- converter
def test_converter_key_table(fixture):
    weights = load_file(fixture.weights_path)
    cfg = VAEConfig.from_release(fixture.config)
    assert "decoder.conv_out.weight" in weights  # the released file's spelling
    arrays = convert_vae(weights, cfg)
    np.testing.assert_array_equal(
        arrays["decoder.conv_out.kernel"], weights["decoder.conv_out.weight"].transpose(2, 3, 4, 1, 0)
    )
    np.testing.assert_array_equal(
        arrays["encoder.down.0.resample.conv.kernel"],
        weights["encoder.down.0.downsample.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        arrays["encoder.down.1.resample.conv.kernel"],
        weights["encoder.down.1.downsample.conv.conv.weight"].transpose(2, 3, 4, 1, 0),
    )
    # The torch module's spelling `decoder.conv_out.conv.*` is accepted too.
    renamed = {k.replace("decoder.conv_out.", "decoder.conv_out.conv."): v for k, v in weights.items()}
    np.testing.assert_array_equal(
        convert_vae(renamed, cfg)["decoder.conv_out.kernel"], arrays["decoder.conv_out.kernel"]
    )
    assert release_shapes(cfg) == {k: v.shape for k, v in weights.items()}
    missing = dict(weights)
    del missing["encoder.mid.attn_1.q.conv.weight"]
    with pytest.raises(ConversionError, match="encoder.mid.attn_1.q.kernel"):
        convert_vae(missing, cfg)
    extra = dict(weights, **{"encoder.mystery.weight": np.zeros(3, np.float32)})
    with pytest.raises(ConversionError, match="encoder.mystery"):
        convert_vae(extra, cfg)


def test_logical_axis_names(model):
    m = model  # built by the converter: the names survive loading
    names = lambda v: tuple(v.get_metadata().get("out_sharding") or v.get_metadata().get("sharding_names") or ())
    assert names(m.encoder.conv_in.kernel) == (None, None, None, "conv_in", "conv_out")
    assert names(m.encoder.down[0].resample.conv.kernel) == (None, None, "conv_in", "conv_out")
    assert names(m.decoder.conv_out.bias) == ("conv_out",)


# ---------------------------------------------------------------------------------------- conv paths
@pytest.mark.parametrize("stride,frames", [(1, 9), (2, 9), (1, 1), (2, 1), (2, 2)])
def test_frame_taps_conv_equals_3d_conv_with_gradients(stride, frames):
    # 1 and 2 frames: the taps that read front padding only are skipped on the frame-taps path.
    from flax import nnx

    from stepvideo_jax.vae.layers import CausalConv3d

    convs = {
        impl: CausalConv3d(5, 6, 3, VAEConfig.tiny(conv_impl=impl), stride=stride, rngs=nnx.Rngs(0))
        for impl in ("conv3d", "frame_taps")
    }
    x = jax.random.normal(jax.random.key(1), (2, frames, 8, 10, 5))

    def loss(conv, x):
        return jnp.sum(jnp.sin(conv(x)))

    outs = {k: c(x) for k, c in convs.items()}
    assert outs["conv3d"].shape == (2, (frames - 1) // stride + 1, (8 - 1) // stride + 1, (10 - 1) // stride + 1, 6)
    np.testing.assert_allclose(outs["frame_taps"], outs["conv3d"], rtol=1e-5, atol=1e-5)
    grads = {k: jax.grad(loss, argnums=1)(c, x) for k, c in convs.items()}
    np.testing.assert_allclose(grads["frame_taps"], grads["conv3d"], rtol=1e-5, atol=1e-5)
    wgrads = {k: nnx.grad(loss)(c, x).kernel[...] for k, c in convs.items()}  # the skipped taps' weights get 0
    np.testing.assert_allclose(wgrads["frame_taps"], wgrads["conv3d"], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="conv_impl must be"):
        VAEConfig.tiny(conv_impl="fft")


def test_non_release_fields_round_trip_through_release_config():
    cfg = VAEConfig.tiny(
        norm_groups=8,
        encoder_ch=8,
        decoder_ch=8,
        encoder_ch_mult=(1, 2, 2, 4),
        decoder_ch_mult=(1, 2, 2, 4),
        num_res_blocks=1,
        z_channels=8,
    )
    assert VAEConfig.from_release(cfg.to_release()) == cfg
