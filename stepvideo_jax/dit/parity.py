"""Parity checks for the `dit_ti2v` / `dit_t2v` fixtures."""

from __future__ import annotations

import jax.numpy as jnp

from stepvideo_jax.convert.dit import load_dit
from stepvideo_jax.tools.fixtures import Fixture

__all__ = ["check", "fixture_inputs"]


def fixture_inputs(fx: Fixture) -> dict:
    """The model's call arguments from a DiT fixture (release layout)."""
    ti2v = bool(fx.config.get("use_additional_conditions"))
    return dict(
        hidden_states=jnp.asarray(fx.tensor("hidden_states")),
        timestep=jnp.asarray(fx.tensor("timestep")),
        encoder_hidden_states=jnp.asarray(fx.tensor("encoder_hidden_states")),
        encoder_attention_mask=jnp.asarray(fx.tensor("encoder_attention_mask")),
        encoder_hidden_states_2=jnp.asarray(fx.io["encoder_hidden_states_2"]) if "encoder_hidden_states_2" in fx.io else None,
        condition_hidden_states=jnp.asarray(fx.tensor("condition_hidden_states")) if ti2v else None,
        motion_score=fx.call.get("motion_score") if ti2v else None,
    )


def check(fx: Fixture) -> list:
    model = load_dit(fx.weights_path, fx.config)
    out = model(**fixture_inputs(fx))
    return [("output", out, fx.tensor("output"))]
