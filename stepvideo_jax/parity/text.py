"""Parity checks for the `step_llm` and `hunyuan_clip` fixtures."""

from __future__ import annotations

import jax.numpy as jnp

from stepvideo_jax.convert.clip import load_hunyuan_clip
from stepvideo_jax.convert.step_llm import load_step_llm
from stepvideo_jax.parity.fixtures import Fixture

__all__ = ["check_step_llm", "check_hunyuan_clip"]


def check_step_llm(fx: Fixture) -> list:
    model = load_step_llm(fx.weights_path, fx.config)
    out = model(jnp.asarray(fx.tensor("input_ids")), jnp.asarray(fx.tensor("attention_mask")))
    return [("output", out, fx.tensor("output"))]


def check_hunyuan_clip(fx: Fixture) -> list:
    model = load_hunyuan_clip(fx.weights_path, fx.config)
    last, pooled = model(jnp.asarray(fx.tensor("input_ids")), jnp.asarray(fx.tensor("attention_mask")))
    return [
        ("last_hidden_state", last, fx.tensor("last_hidden_state")),
        ("pooler_output", pooled, fx.tensor("pooler_output")),
    ]
