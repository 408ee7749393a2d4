"""Flow-matching schedule, Euler step, CFG step and the sampling loop (parity on the DiT fixtures)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.diffusion.flow_match import euler_step, flow_sigmas
from stepvideo_jax.diffusion.sampler import Sampler, TextConditioning, guided_velocity
from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.parity import compare
from stepvideo_jax.testing import random_model


def test_sigmas_formula_and_direction():
    s = flow_sigmas(4, 13.0)
    t = np.linspace(1, 0, 5)
    expected = 1 - 13 * t / (1 + 12 * t)
    assert s.dtype == np.float32 and s.shape == (5,)
    np.testing.assert_allclose(s, expected, rtol=0, atol=1e-7)
    assert s[0] == 0.0 and s[-1] == 1.0 and np.all(np.diff(s) > 0)  # noise (0) -> data (1)
    np.testing.assert_allclose(flow_sigmas(3, 1.0), [0, 1 / 3, 2 / 3, 1], atol=1e-7)  # no shift: uniform


@pytest.mark.parametrize("steps,shift", [(0, 13.0), (2.5, 13.0), (True, 13.0), (4, 0.0), (4, float("nan"))])
def test_sigmas_reject_bad_arguments(steps, shift):
    with pytest.raises(ValueError):
        flow_sigmas(steps, shift)


def test_euler_step_upcasts_to_float32():
    x = jnp.full((2, 3), 1.0, jnp.bfloat16)
    v = jnp.full((2, 3), 3.0, jnp.bfloat16)
    out = euler_step(x, v, np.float32(0.25), np.float32(0.5))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.full((2, 3), 1.75, np.float32))


def _tiny_dit(ti2v: bool) -> StepVideoDiT:
    cfg = DiTConfig(
        num_heads=2,
        head_dim=16,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        use_additional_conditions=ti2v,
        caption_channels=(8, 6),
        rope_split=(8, 4, 4),
    )
    return random_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), seed=0)


def _tiny_inputs(ti2v: bool):
    k = jax.random.split(jax.random.key(1), 4)
    latents = jax.random.normal(k[0], (1, 2, 2, 3, 4))  # [B, F, H, W, C]
    text = TextConditioning(
        jax.random.normal(k[1], (2, 5, 8)),
        jnp.array([[1] * 7 + [0] * 3, [1] * 9 + [0]], jnp.int32),
        jax.random.normal(k[2], (2, 5, 6)),
    )
    condition = jax.random.normal(k[3], latents.shape) if ti2v else None
    return latents, text, condition, (5.0 if ti2v else None)


class _RecordingModel:
    """Stands in for the DiT: velocity = latents + per-row text mean + condition; records its inputs."""

    class cfg:
        jnp_dtype = jnp.float32

    def forward(self, x, t, llm_states, mask, clip_states, condition, motion_score):
        self.seen = dict(x=x, t=t, condition=condition, motion_score=motion_score)
        v = x + llm_states.mean(axis=(1, 2))[:, None, None, None, None]
        return v if condition is None else v + condition


def test_guidance_combines_conditional_and_unconditional_rows():
    latents, text, condition, motion = _tiny_inputs(True)
    text = text._replace(llm_states=jnp.stack([jnp.full((5, 8), 2.0), jnp.full((5, 8), -1.0)]))  # row means 2, -1
    model = _RecordingModel()
    guided = jax.jit(lambda g: (guided_velocity(model, latents, 0.3, text, condition, motion, g), model.seen))
    x, c = np.asarray(latents), np.asarray(condition)
    for g in [0.0, 1.0, 9.0]:
        got, seen = guided(jnp.float32(g))
        v_cond, v_uncond = x + 2.0 + c, x - 1.0 + c
        np.testing.assert_allclose(np.asarray(got), v_uncond + g * (v_cond - v_uncond), rtol=1e-6, atol=1e-6)
    assert seen["x"].shape[0] == 2 and np.array_equal(seen["x"][0], seen["x"][1])  # same latents in both rows
    assert np.array_equal(seen["condition"][0], condition[0]) and np.array_equal(seen["condition"][1], condition[0])
    np.testing.assert_allclose(np.asarray(seen["t"]), [0.3, 0.3], rtol=1e-7)  # sigma itself is the timestep
    assert float(seen["motion_score"]) == motion


def test_fused_loop_matches_host_loop_and_checks_rows():
    model = _tiny_dit(True)
    latents, text, condition, motion = _tiny_inputs(True)
    sampler = Sampler(model)
    sigmas = flow_sigmas(3, 13.0)
    host = sampler.sample(latents, sigmas, text, condition, motion, 9.0, progress=False)
    fused = sampler.sample(latents, sigmas, text, condition, motion, 9.0, fused=True)
    assert host.dtype == jnp.float32 and len(sampler.step_seconds) == 3
    np.testing.assert_allclose(np.asarray(fused), np.asarray(host), rtol=1e-5, atol=1e-5)
    bad = TextConditioning(text.llm_states[:1], text.mask[:1], text.clip_states[:1])
    with pytest.raises(ValueError, match="2\\*batch"):
        sampler.sample(latents, sigmas, bad, condition, motion, 9.0, progress=False)


@pytest.mark.parametrize("name", ["dit_ti2v", "dit_t2v"])
def test_sampling_loop_parity(fixture_prefix, name):
    from stepvideo_jax.convert.dit import load_dit
    from stepvideo_jax.parity.dit import run_fixture_sampling
    from stepvideo_jax.parity.fixtures import load_fixture

    fx = load_fixture(fixture_prefix(name))
    sigmas, final = run_fixture_sampling(load_dit(fx.weights_path, fx.config), fx)
    assert compare(sigmas, fx.tensor("sample_sigmas"))[1] <= 1e-6
    max_abs, rel = compare(final, fx.tensor("sample_final_latents"))
    assert rel <= 1e-5, f"{name}: sample_final_latents rel_l2={rel:.3e} max_abs={max_abs:.3e}"
