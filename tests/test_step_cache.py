"""Step caching and the guidance interval in the sampler (tiny random-weight TI2V DiT)."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.diffusion.cache import CacheSettings, guidance_steps, static_skip_schedule
from stepvideo_jax.diffusion.flow_match import flow_sigmas
from stepvideo_jax.diffusion.sampler import Sampler, TextConditioning
from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.testing import random_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10
# Ratios such that static@0.5 with max_skips 2 reuses steps after the warm-up.
RATIOS = (1.0, 0.99, 1.02, 0.97, 0.98, 0.99, 0.97, 0.96, 0.95, 0.9)


def _model(layers=3):
    cfg = DiTConfig(
        num_heads=2,
        head_dim=16,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        use_additional_conditions=True,
        caption_channels=(8, 6),
        rope_split=(8, 4, 4),
    )
    return random_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), seed=0)


def _inputs():
    k = jax.random.split(jax.random.key(1), 4)
    latents = jax.random.normal(k[0], (1, 2, 4, 4, 4))  # [B, F, H, W, C]
    text = TextConditioning(
        jax.random.normal(k[1], (2, 5, 8)),
        jnp.array([[1] * 7 + [0] * 3, [1] * 9 + [0]], jnp.int32),
        jax.random.normal(k[2], (2, 5, 6)),
    )
    return latents, text, jax.random.normal(k[3], latents.shape), 5.0


@pytest.fixture(scope="module")
def setup():
    model = _model()
    return model, Sampler(model), _inputs(), flow_sigmas(STEPS, 3.0)


def test_split_forward_equals_forward(setup):
    model, _, (latents, text, condition, motion), _ = setup
    x = jnp.concatenate([latents, latents])
    cond = jnp.concatenate([condition, condition])
    args = (x, jnp.array([0.3, 0.3]), text.llm_states, text.mask, text.clip_states, cond, motion)

    graphdef, state = nnx.split(model)

    @jax.jit
    def split(state, x, t, llm, mask, clip, cond):
        m = nnx.merge(graphdef, state)
        inputs = m.embed_inputs(x, t, llm, mask, clip, cond, motion)
        h = m.run_blocks(m.run_blocks(inputs.tokens, inputs, 0, 1), inputs, 1)
        return m.final_layer(h, inputs)

    expected = jax.jit(lambda state, *a: nnx.merge(graphdef, state).forward(*a, motion))(state, *args[:-1])
    np.testing.assert_allclose(np.asarray(split(state, *args[:-1])), np.asarray(expected), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="block range"):
        model.run_blocks(x, None, 2, 1)


def test_policy_none_is_todays_sampler_bit_for_bit(setup):
    _, sampler, (latents, text, condition, motion), sigmas = setup
    x = jnp.asarray(latents, jnp.float32)
    g, ms = jnp.float32(4.0), jnp.float32(motion)
    for i in range(STEPS):  # the sampler's original per-step program
        x = sampler.step_fn(sampler.state, x, sigmas[i], sigmas[i + 1], text, condition, ms, g)
    for cache in (None, CacheSettings(), CacheSettings("none", first_block_threshold=0.9, mag_ratios=RATIOS)):
        out = sampler.sample(latents, sigmas, text, condition, motion, 4.0, progress=False, cache=cache)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
        assert sampler.dit_evals == 2 * STEPS and sampler.computed_steps == [True] * STEPS


@pytest.mark.parametrize(
    "cache",
    [
        CacheSettings("first_block", first_block_threshold=0.0),
        CacheSettings("static", static_threshold=0.0, mag_ratios=RATIOS),
    ],
)
def test_cache_that_never_reuses_equals_uncached(setup, cache):
    _, sampler, (latents, text, condition, motion), sigmas = setup
    ref = sampler.sample(latents, sigmas, text, condition, motion, 4.0, progress=False)
    out = sampler.sample(latents, sigmas, text, condition, motion, 4.0, progress=False, cache=cache)
    assert sampler.dit_evals == 2 * STEPS
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "cache",
    [
        CacheSettings("first_block", first_block_threshold=0.5, warmup=0.2),
        CacheSettings("static", static_threshold=0.5, mag_ratios=RATIOS, warmup=0.2),
    ],
)
def test_cached_runs_skip_and_host_loop_equals_fused(setup, cache):
    _, sampler, (latents, text, condition, motion), sigmas = setup
    ref = np.asarray(sampler.sample(latents, sigmas, text, condition, motion, 4.0, progress=False))
    host = sampler.sample(latents, sigmas, text, condition, motion, 4.0, progress=False, cache=cache)
    computed, evals = sampler.computed_steps, sampler.dit_evals
    fused = sampler.sample(latents, sigmas, text, condition, motion, 4.0, fused=True, cache=cache)
    assert sampler.dit_evals == evals == 2 * sum(computed) < 2 * STEPS
    assert computed[:2] == [True, True]  # the warm-up fraction is always computed
    run = 0
    for c in computed:  # at most max_skips reused steps in a row
        run = 0 if c else run + 1
        assert run <= cache.max_skips
    if cache.policy == "static":
        assert computed == list(~static_skip_schedule(cache, STEPS))
    np.testing.assert_allclose(np.asarray(fused), np.asarray(host), rtol=1e-5, atol=1e-5)
    # Reuse changes the result, but only a little on this smooth trajectory.
    err = np.linalg.norm(np.asarray(host) - ref) / np.linalg.norm(ref)
    assert 0 < err < 0.2, err


@pytest.mark.slow  # the guidance interval is also checked by test_pipeline (dit_evals, bad interval)
def test_guidance_interval_evaluates_one_row_outside(setup):
    _, sampler, (latents, text, condition, motion), sigmas = setup
    interval = (0.2, 0.6)
    use_cfg = guidance_steps(STEPS, interval)
    assert use_cfg.tolist() == [False, False, True, True, True, True, False, False, False, False]
    # With guidance scale 1, CFG's velocity is the conditional one: the interval must not change it.
    full = sampler.sample(latents, sigmas, text, condition, motion, 1.0, progress=False)
    for fused in (False, True):
        out = sampler.sample(
            latents, sigmas, text, condition, motion, 1.0, progress=False, fused=fused, guidance_interval=interval
        )
        assert sampler.dit_evals == 2 * 4 + 6
        np.testing.assert_allclose(np.asarray(out), np.asarray(full), rtol=1e-5, atol=1e-5)
    # With guidance it does change, and caching across the row change still recomputes first.
    cache = CacheSettings("first_block", first_block_threshold=10.0, warmup=0.0, max_skips=9)
    sampler.sample(
        latents, sigmas, text, condition, motion, 4.0, progress=False, guidance_interval=interval, cache=cache
    )
    computed = sampler.computed_steps
    assert computed[0] and computed[2] and not computed[1] and not computed[3]  # step 2 switches to 2 rows
    with pytest.raises(ValueError, match="guidance_interval"):
        sampler.sample(latents, sigmas, text, condition, motion, 4.0, progress=False, guidance_interval=(0.5, 0.5))


def test_static_schedule_by_hand():
    s = CacheSettings("static", static_threshold=0.15, max_skips=5, warmup=0.0, mag_ratios=(0.9,) * 6)
    # step 1: |1 - .9| = .1 -> reuse; step 2: .1 + |1 - .81| = .29 -> compute (reset); and so on.
    assert static_skip_schedule(s, 6).tolist() == [False, True, False, True, False, True]
    s = dataclasses.replace(s, static_threshold=10.0, max_skips=2, warmup=0.5)
    assert static_skip_schedule(s, 6).tolist() == [False, False, False, True, True, False]
    # Ratios calibrated for 6 steps resample to 12.
    assert static_skip_schedule(s, 12).sum() == 4


def test_cache_settings_validate_and_auto_resolves():
    assert CacheSettings("auto").resolved().policy == "first_block"
    assert CacheSettings("auto", mag_ratios=RATIOS).resolved().policy == "static"
    for bad in (
        dict(policy="teacache"),
        dict(policy="static"),
        dict(first_block_threshold=-1.0),
        dict(max_skips=0),
        dict(warmup=1.5),
        dict(mag_ratios=(1.0, -0.5)),
    ):
        with pytest.raises(ValueError, match="cache"):
            CacheSettings(**bad)
    with pytest.raises(ValueError, match="unknown cache fields"):
        CacheSettings.from_config({"policy": "none", "treshold": 0.1})


def test_cached_run_on_a_4_device_mesh_equals_single_device():
    from stepvideo_jax.dit import DIT_SHARDING as DIT_RULES
    from stepvideo_jax.sharding import MeshConfig, make_mesh, model_shardings, use_mesh_rules

    latents, text, condition, motion = _inputs()
    sigmas = flow_sigmas(STEPS, 3.0)
    cache = CacheSettings("first_block", first_block_threshold=0.5, warmup=0.2)
    # The fused loop: one compiled program per model, with the skips decided on the device (lax.cond).
    single = Sampler(_model())
    expected = single.sample(latents, sigmas, text, condition, motion, 4.0, fused=True, cache=cache)
    mesh = make_mesh(MeshConfig(fsdp=2, sequence=2), devices=jax.devices()[:4])
    graphdef, state = nnx.split(_model())
    model = nnx.merge(graphdef, jax.device_put(state, model_shardings(state, mesh, DIT_RULES)))
    with use_mesh_rules(mesh, DIT_RULES):
        sharded = Sampler(model)
        out = sharded.sample(latents, sigmas, text, condition, motion, 4.0, fused=True, cache=cache)
    assert out.sharding.num_devices == 4
    assert sharded.dit_evals == single.dit_evals < 2 * STEPS
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_turbo_config_has_the_release_settings():
    from stepvideo_jax.configs import t2v

    c = t2v.get_config("turbo")
    # Step-Video-T2V README, best-of-practice table: Turbo 10-15 steps, CFG 5.0, time shift 17.0, 204 frames.
    assert 10 <= c.steps <= 15 and c.cfg == 5.0 and c.time_shift == 17.0 and c.frames == 204
    assert not c.use_additional_conditions and "turbo" in c.checkpoint_dir and c.cache.policy == "none"
    base = t2v.get_config("")
    assert (base.steps, base.cfg, base.time_shift) == (50, 9.0, 13.0)
    with pytest.raises(ValueError, match="variant"):
        t2v.get_config("fast")
