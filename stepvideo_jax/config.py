"""Shared configuration helpers: dtype names, named remat policies, config dataclasses from dicts.

Each network has its own frozen config dataclass (``DiTConfig`` in ``stepvideo_jax.dit`` and so on);
those, not the ml_collections tree, are what reach the modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["dtype_from_name", "remat_policy", "REMAT_POLICIES", "DtypeFields", "dataclass_from"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str):
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


class DtypeFields:
    """Mixin for the frozen network configs, which all carry `dtype` and `param_dtype` names."""

    @property
    def jnp_dtype(self):
        return dtype_from_name(self.dtype)

    @property
    def jnp_param_dtype(self):
        return dtype_from_name(self.param_dtype)


# Named rematerialisation policies for the scanned layer stack. "none" keeps every activation
# (inference / small models); "full" saves nothing inside a layer; the others trade memory for FLOPs.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "offload_dots": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}


def remat_policy(name: str):
    """Returns (enabled, policy) for a named policy; raises naming the known ones."""
    if name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {name!r}; expected one of {sorted(REMAT_POLICIES)}")
    return name != "none", REMAT_POLICIES[name]


def dataclass_from(cls, tree) -> Any:
    """A frozen config dataclass `cls` from a mapping (e.g. a ConfigDict section): an unknown field
    raises naming it and the known ones; lists become tuples (`buckets` a tuple of tuples), so the
    result is hashable like the configs written in code."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(tree)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(fields)}")
    return cls(
        **{
            k: tuple(map(tuple, v)) if k == "buckets" else (tuple(v) if isinstance(v, list) else v)
            for k, v in values.items()
        }
    )
