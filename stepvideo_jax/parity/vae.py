"""Parity checks for the `vae_v2` fixtures: `moments` and `mean` from `video`, `decoded` from
`mean`, `image_moments` from `image` (each only when the fixture holds it)."""

from __future__ import annotations

import jax.numpy as jnp

from stepvideo_jax.convert.vae import load_vae
from stepvideo_jax.parity.fixtures import Fixture, FixtureError

__all__ = ["check"]


def check(fx: Fixture) -> list:
    model = load_vae(fx.weights_path, fx.config)
    results = []
    if "video" in fx.io:
        moments = model.encode_moments(jnp.asarray(fx.tensor("video")))
        if "moments" in fx.io:
            results.append(("moments", moments, fx.tensor("moments")))
        if "mean" in fx.io:
            results.append(("mean", model.encode(jnp.asarray(fx.tensor("video"))), fx.tensor("mean")))
    if "decoded" in fx.io:
        results.append(("decoded", model.decode(jnp.asarray(fx.tensor("mean"))), fx.tensor("decoded")))
    if "image" in fx.io:
        results.append(
            ("image_moments", model.encode_moments(jnp.asarray(fx.tensor("image"))), fx.tensor("image_moments"))
        )
    if not results:
        raise FixtureError(
            f"{fx.prefix}: a vae_v2 fixture needs 'video', 'mean' or 'image' tensors; has {sorted(fx.io)}"
        )
    return results
