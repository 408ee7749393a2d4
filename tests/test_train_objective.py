"""The flow-matching objective's pieces and the optimizer schedule (cheap, no DiT)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepvideo_jax.diffusion.flow_match import flow_sigmas
from stepvideo_jax.training.objective import (
    ObjectiveConfig,
    augment_condition_image,
    condition_noise_strength,
    drop_captions,
    interpolate,
    model_text_mask,
    pad_condition,
    sample_timesteps,
    velocity_target,
)
from stepvideo_jax.training.optimizer import OptimConfig, decay_mask, make_schedule


def test_interpolation_convention_matches_sampler():
    x, noise = jnp.full((2, 3), 2.0), jnp.full((2, 3), -1.0)
    t = jnp.array([0.0, 1.0])
    xt = interpolate(x, noise, t)
    np.testing.assert_array_equal(xt[0], noise[0])  # t = 0 is noise
    np.testing.assert_array_equal(xt[1], x[1])  # t = 1 is data
    v = velocity_target(x, noise)
    # One Euler step of the sampler (x += v * dt) from t to t + dt along the straight path.
    t0, dt = 0.25, 0.5
    np.testing.assert_allclose(
        interpolate(x, noise, jnp.full((2,), t0)) + v * dt, interpolate(x, noise, jnp.full((2,), t0 + dt)), rtol=1e-6
    )
    # The sampler's sigmas rise from 0 (noise) to 1 (data), the same t as here.
    sig = flow_sigmas(4, 3.0)
    assert sig[0] == 0.0 and sig[-1] == 1.0


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_timestep_sampling_and_shift(sampling):
    key = jax.random.key(0)
    plain = sample_timesteps(key, 20000, ObjectiveConfig(timestep_sampling=sampling))
    shifted = sample_timesteps(key, 20000, ObjectiveConfig(timestep_sampling=sampling, time_shift=5.0))
    assert plain.min() >= 0.0 and plain.max() <= 1.0
    assert float(plain.mean()) == pytest.approx(0.5, abs=0.02)
    # Shift > 1 moves training toward noise (small t), like the shifted sampler, pointwise.
    u = 1.0 - plain
    np.testing.assert_allclose(shifted, 1.0 - 5.0 * u / (1.0 + 4.0 * u), rtol=1e-5, atol=1e-6)
    assert float(shifted.mean()) < float(plain.mean()) - 0.1


def test_condition_noise_is_per_example():
    cfg = ObjectiveConfig(cond_noise="uniform", cond_noise_min=0.0, cond_noise_max=0.5)
    sig = condition_noise_strength(jax.random.key(1), 64, cfg)
    assert sig.shape == (64,) and float(sig.min()) >= 0.0 and float(sig.max()) <= 0.5 and float(sig.std()) > 0.05
    image = jnp.zeros((3, 32, 32, 3))
    out = augment_condition_image(image, jax.random.key(2), cfg)
    stds = np.asarray(out.reshape(3, -1).std(axis=1))
    want = condition_noise_strength(jax.random.split(jax.random.key(2))[0], 3, cfg)  # the strengths drawn
    np.testing.assert_allclose(stds, want, rtol=0.06)
    none = augment_condition_image(image, jax.random.key(2), ObjectiveConfig(cond_noise="none"))
    np.testing.assert_array_equal(none, image)


def test_pad_condition_zero_pads_after_first_frame():
    cond = jnp.ones((2, 1, 2, 2, 4))
    out = pad_condition(cond, 3)
    assert out.shape == (2, 3, 2, 2, 4)
    np.testing.assert_array_equal(out[:, 0], 1.0)
    np.testing.assert_array_equal(out[:, 1:], 0.0)
    with pytest.raises(ValueError, match="condition latents"):
        pad_condition(jnp.ones((2, 4, 2, 2, 4)), 3)


def test_caption_dropout_uses_null_prompt():
    text = {"llm_states": jnp.ones((1000, 3, 2)), "llm_mask": jnp.ones((1000, 3), jnp.int32)}
    null = {"llm_states": jnp.full((3, 2), -7.0), "llm_mask": jnp.array([1, 0, 0], jnp.int32)}
    out, dropped = drop_captions(jax.random.key(0), text, null, 0.3)
    assert float(dropped.mean()) == pytest.approx(0.3, abs=0.05)
    np.testing.assert_array_equal(out["llm_states"][dropped], -7.0)
    np.testing.assert_array_equal(out["llm_states"][~dropped], 1.0)
    assert (np.asarray(out["llm_mask"])[np.asarray(dropped)] == [1, 0, 0]).all()
    none, d0 = drop_captions(jax.random.key(0), text, null, 0.0)
    assert not bool(d0.any())
    np.testing.assert_array_equal(model_text_mask(jnp.array([[1, 0]]), 2), [[1, 1, 1, 0]])


def test_schedule_warmup_and_decay():
    sched = make_schedule(
        OptimConfig(learning_rate=1.0, warmup_steps=10, total_steps=110, schedule="cosine", end_lr_factor=0.1)
    )
    assert float(sched(0)) == pytest.approx(0.1)
    assert float(sched(5)) == pytest.approx(0.55)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(60)) == pytest.approx(0.55, abs=1e-3)
    assert float(sched(110)) == pytest.approx(0.1)
    mask = decay_mask({"a": {"kernel": 1, "bias": 2}, "scale_shift_table": 3})
    assert mask == {"a": {"kernel": True, "bias": False}, "scale_shift_table": False}
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="step")
