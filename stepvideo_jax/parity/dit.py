"""Parity checks for the `dit_ti2v` / `dit_t2v` fixtures."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from stepvideo_jax.convert.dit import load_dit
from stepvideo_jax.parity.fixtures import Fixture

__all__ = ["check", "fixture_inputs", "run_fixture_sampling"]


def fixture_inputs(fx: Fixture) -> dict:
    """The model's call arguments from a DiT fixture (release layout)."""
    ti2v = bool(fx.config.get("use_additional_conditions"))
    return dict(
        hidden_states=jnp.asarray(fx.tensor("hidden_states")),
        timestep=jnp.asarray(fx.tensor("timestep")),
        encoder_hidden_states=jnp.asarray(fx.tensor("encoder_hidden_states")),
        encoder_attention_mask=jnp.asarray(fx.tensor("encoder_attention_mask")),
        encoder_hidden_states_2=jnp.asarray(fx.io["encoder_hidden_states_2"])
        if "encoder_hidden_states_2" in fx.io
        else None,
        condition_hidden_states=jnp.asarray(fx.tensor("condition_hidden_states")) if ti2v else None,
        motion_score=fx.call.get("motion_score") if ti2v else None,
    )


def run_fixture_sampling(model, fx: Fixture) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's CFG sampling loop: returns (sigmas [N+1], final latents in the release layout).

    Rows 0/1 of the fixture's text inputs are the conditional/unconditional rows; the image condition
    is row 0 of `condition_hidden_states`, used for both rows (see the fixture's `sample_note`).
    """
    from stepvideo_jax.diffusion.flow_match import flow_sigmas
    from stepvideo_jax.diffusion.sampler import Sampler, TextConditioning

    inputs = fixture_inputs(fx)
    sigmas = flow_sigmas(int(fx.call["sample_steps"]), float(fx.call["sample_time_shift"]))
    to_last = lambda a: jnp.transpose(jnp.asarray(a), (0, 1, 3, 4, 2))  # (b, f, c, h, w) -> (b, f, h, w, c)
    text = TextConditioning(
        inputs["encoder_hidden_states"], inputs["encoder_attention_mask"], inputs["encoder_hidden_states_2"]
    )
    condition = None if inputs["condition_hidden_states"] is None else to_last(inputs["condition_hidden_states"][:1])
    final = Sampler(model).sample(
        to_last(fx.tensor("sample_init_latents")),
        sigmas,
        text,
        condition,
        inputs["motion_score"],
        float(fx.call["sample_cfg_scale"]),
        progress=False,
    )
    return sigmas, np.asarray(jnp.transpose(final, (0, 1, 4, 2, 3)))


def check(fx: Fixture) -> list:
    model = load_dit(fx.weights_path, fx.config)
    out = model(**fixture_inputs(fx))
    results = [("output", out, fx.tensor("output"))]
    if "sample_init_latents" in fx.io:
        sigmas, final = run_fixture_sampling(model, fx)
        results += [
            ("sample_sigmas", sigmas, fx.tensor("sample_sigmas")),
            ("sample_final_latents", final, fx.tensor("sample_final_latents")),
        ]
    return results
