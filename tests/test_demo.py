"""The embedded demo's building blocks: synthetic data, the VAE objective and trainer, checkpoint export."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.data import synthetic
from stepvideo_jax.data.manifest import read_manifest
from stepvideo_jax.data.video import SkipItem, read_clip
from stepvideo_jax.training.vae_objective import VAEObjectiveConfig, gaussian_kl, vae_loss
from stepvideo_jax.vae import VAEConfig, VideoVAE


def _spec(direction="right", speed=0.5, background="plain", shape="circle"):
    rng = np.random.default_rng(3)
    spec = synthetic.sample_spec(rng, ("large", "red", shape, direction), frames=17, height=64, width=64, max_speed=0.6)
    return dataclasses.replace(spec, speed=speed, background=background)


def _red_centroid(frame):
    mask = (frame[..., 0] > 150) & (frame[..., 1] < 120)
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


# ---------------------------------------------------------------------------------------- synthetic data
@pytest.mark.parametrize("direction", sorted(synthetic.DIRECTIONS))
def test_rendered_shape_moves_by_speed_in_caption_direction(direction):
    spec = _spec(direction, speed=0.5)
    clip = synthetic.render_clip(spec, 17, 64, 64)
    assert clip.shape == (17, 64, 64, 3) and clip.dtype == np.uint8
    (x0, y0), (x1, y1) = _red_centroid(clip[0]), _red_centroid(clip[16])
    dx, dy = synthetic.DIRECTIONS[direction]
    # 16 frames at 0.5 px/frame = 8 px along the caption's direction, nothing across it.
    np.testing.assert_allclose([x1 - x0, y1 - y0], [8.0 * dx, 8.0 * dy], atol=0.3)
    assert synthetic.direction_of_caption(spec.caption) == direction
    assert spec.caption == f"a large red circle moves {direction}"


def test_motion_score_comes_from_flow_and_grows_with_speed():
    scores = [
        synthetic.clip_motion_score(synthetic.render_clip(_spec("left", s, "stripes"), 17, 64, 64))
        for s in (0.0, 0.15, 0.3, 0.6)
    ]
    assert scores[0] < 1e-3  # a static clip (Farneback leaves ~1e-4 on the striped background)
    assert scores[1] < scores[2] < scores[3], scores
    # Roughly linear in speed (translation): doubling the speed about doubles the score.
    assert 1.5 < scores[3] / scores[2] < 2.5, scores


def test_heldout_captions_never_in_training_but_every_word_is():
    train, held = synthetic.split_captions(20, seed=0)
    assert len(held) == 20 and not set(held) & set(train)
    assert len(train) + len(held) == len(synthetic.all_captions())
    for k in range(4):
        assert {c[k] for c in train} == {c[k] for c in synthetic.all_captions()}
    assert synthetic.split_captions(20, seed=0) == (train, held)  # deterministic
    assert synthetic.direction_of_caption("a cat sits") is None
    assert synthetic.direction_of_caption("moves left then right") is None


def test_write_dataset_layout_and_npy_clips(tmp_path):
    summary = synthetic.write_dataset(str(tmp_path), num_train=3, num_heldout=2, seed=1)
    assert summary["train"] == 3 and summary["heldout"] == 2
    entries = read_manifest(tmp_path / "manifest.jsonl")
    held = {tuple(json.loads(line)["caption"].split()[1:4]) for line in open(tmp_path / "heldout" / "heldout.jsonl")}
    for e in entries:
        clip = read_clip(e["video"], 17)
        assert clip.shape == (17, 64, 64, 3)
        assert e["motion_score"] == pytest.approx(synthetic.clip_motion_score(clip), abs=1e-4)
        assert tuple(e["caption"].split()[1:4]) not in held
    items = sorted(os.listdir(tmp_path / "heldout" / synthetic.HELDOUT_CATEGORY))
    assert items == ["000.png", "000.txt", "001.png", "001.txt"]
    with pytest.raises(SkipItem, match="too_short"):
        read_clip(entries[0]["video"], 34)
    np.save(tmp_path / "bad.npy", np.zeros((17, 8, 8), np.float32))
    with pytest.raises(SkipItem, match="expected uint8"):
        read_clip(str(tmp_path / "bad.npy"), 17)


def test_write_heldout_equals_the_data_stages_heldout_files(tmp_path):
    synthetic.write_dataset(str(tmp_path / "full"), num_train=5, num_heldout=3, seed=2)
    synthetic.write_heldout(str(tmp_path / "only"), num_train=5, num_heldout=3, seed=2)
    assert not os.path.exists(tmp_path / "only" / "clips")
    full, only = tmp_path / "full" / "heldout", tmp_path / "only" / "heldout"
    names = sorted(os.listdir(full / synthetic.HELDOUT_CATEGORY))
    assert names == sorted(os.listdir(only / synthetic.HELDOUT_CATEGORY)) and len(names) == 6
    for name in names + ["../heldout.jsonl"]:
        a = (full / synthetic.HELDOUT_CATEGORY / name).read_bytes()
        assert a == (only / synthetic.HELDOUT_CATEGORY / name).read_bytes(), name


# ---------------------------------------------------------------------------------------- VAE objective
def test_gaussian_kl_matches_closed_form():
    mean, logvar = jnp.array([0.0, 1.0, -2.0]), jnp.array([0.0, np.log(4.0), np.log(0.25)])
    var = np.exp(np.asarray(logvar))
    expected = 0.5 * (np.asarray(mean) ** 2 + var - 1 - np.log(var))
    np.testing.assert_allclose(gaussian_kl(mean, logvar), expected, rtol=1e-6)
    assert float(gaussian_kl(jnp.zeros(()), jnp.zeros(()))) == 0.0


def _tiny_vae():
    return VideoVAE(VAEConfig.tiny(z_channels=4, encoder_ch=8, decoder_ch=8, norm_groups=8), rngs=nnx.Rngs(0))


@pytest.mark.slow  # ~90 s of VAE gradients on 2 cores
def test_vae_loss_terms():
    vae = _tiny_vae()
    video = jax.random.uniform(jax.random.key(0), (2, 17, 16, 16, 3), minval=-1, maxval=1)
    cfg = VAEObjectiveConfig(recon="l2", kl_weight=0.5, image_weight=2.0)
    loss, aux = vae_loss(vae, {"video": video}, jax.random.key(1), cfg)
    np.testing.assert_allclose(loss, aux["clip_recon"] + 0.5 * aux["kl"] + 2.0 * aux["image_recon"], rtol=1e-6)
    no_image, aux2 = vae_loss(vae, {"video": video}, jax.random.key(1), dataclasses.replace(cfg, image_weight=0.0))
    assert "image_recon" not in aux2
    np.testing.assert_allclose(no_image, aux["clip_recon"] + 0.5 * aux["kl"], rtol=1e-6)
    with pytest.raises(ValueError, match="VAE training clips must be"):
        vae_loss(vae, {"video": video[:, :9]}, jax.random.key(1), cfg)
    with pytest.raises(ValueError, match="recon must be"):
        VAEObjectiveConfig(recon="l3")


@pytest.mark.slow  # ~2 min of VAE training steps on 2 cores
def test_vae_trainer_learns_a_fixed_clip():
    from stepvideo_jax.sharding import MeshConfig, make_mesh
    from stepvideo_jax.training import OptimConfig, Trainer
    from stepvideo_jax.vae import VAE_SHARDING

    cfg = VAEConfig.tiny(z_channels=4, encoder_ch=8, decoder_ch=8, norm_groups=8)
    optim = OptimConfig(learning_rate=3e-3, warmup_steps=1, total_steps=40, ema_decay=0.0, weight_decay=0.0)
    mesh = make_mesh(MeshConfig.parse("data=1,fsdp=1"), devices=jax.devices()[:1])
    trainer = Trainer(
        lambda rngs: VideoVAE(cfg, rngs=rngs), optim, VAEObjectiveConfig(kl_weight=1e-4), mesh, VAE_SHARDING
    )
    clip = synthetic.render_clip(_spec("down", 0.5), 17, 16 * 4, 16 * 4)[:, ::4, ::4]  # [17, 16, 16, 3]
    batch = trainer.device_batch({"video": (clip[None].astype(np.float32) / 127.5 - 1.0)})
    state = trainer.init_state(0)
    losses = []
    for _ in range(40):
        state, metrics = trainer.step(state, batch, fixed_noise=True)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------------------- export
def test_save_components_round_trips_through_restore(tmp_path):
    from stepvideo_jax.components import component_config, restore_component, save_components

    vae = _tiny_vae()
    save_components(tmp_path / "ckpt", {"vae": (vae, None)}, source="test")
    assert component_config(tmp_path / "ckpt", "vae") == vae.cfg
    restored = restore_component(tmp_path / "ckpt", "vae")
    for (p, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(vae, nnx.Param)), nnx.to_flat_state(nnx.state(restored, nnx.Param))
    ):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(p))
    with pytest.raises(FileExistsError, match="destination exists"):
        save_components(tmp_path / "ckpt", {"vae": (vae, None)}, source="test")
    # Cast on export: the manifest names the stored dtype and the values are the rounded ones.
    manifest = save_components(tmp_path / "bf16", {"vae": (vae, None)}, source="test", param_dtype="bfloat16")
    assert manifest["components"]["vae"]["dtype"] == "bfloat16"
    half = restore_component(tmp_path / "bf16", "vae")
    assert half.cfg == dataclasses.replace(vae.cfg, param_dtype="bfloat16")
    kernel = np.asarray(vae.decoder.conv_out.kernel.get_value())
    np.testing.assert_array_equal(np.asarray(half.decoder.conv_out.kernel.get_value()), kernel.astype(jnp.bfloat16))


def test_frozen_prefixes_get_zero_updates():
    import optax

    from stepvideo_jax.training.optimizer import OptimConfig, frozen_labels, make_optimizer

    params = {
        "encoder": {"conv": {"kernel": jnp.ones((2, 2))}},
        "encoder_extra": {"bias": jnp.ones(2)},
        "decoder": {"conv": {"kernel": jnp.ones((2, 2))}},
    }
    labels = frozen_labels(params, ("encoder",))
    assert labels == {
        "encoder": {"conv": {"kernel": "frozen"}},
        "encoder_extra": {"bias": "trained"},
        "decoder": {"conv": {"kernel": "trained"}},
    }
    tx = make_optimizer(OptimConfig(learning_rate=0.1, warmup_steps=0, total_steps=10, frozen=("encoder",)))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["encoder"]["conv"]["kernel"], params["encoder"]["conv"]["kernel"])
    assert float(jnp.abs(new["decoder"]["conv"]["kernel"] - 1).min()) > 0.05
    assert float(jnp.abs(new["encoder_extra"]["bias"] - 1).min()) > 0.05
