"""Logical-axis sharding: model code names logical axes, one rules table maps them to mesh axes.

This module is the only place that knows about meshes. ``constrain(x, names)`` is what model code
calls on activations; it is the identity unless a mesh and rules are active (``use_mesh_rules``).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["constrain", "use_mesh_rules", "logical_to_spec", "current_mesh_rules"]

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

_ACTIVE: contextvars.ContextVar[tuple[Mesh, LogicalRules] | None] = contextvars.ContextVar(
    "stepvideo_mesh_rules", default=None
)


@contextlib.contextmanager
def use_mesh_rules(mesh: Mesh, rules: LogicalRules) -> Iterator[None]:
    token = _ACTIVE.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def current_mesh_rules() -> tuple[Mesh, LogicalRules] | None:
    return _ACTIVE.get()


def logical_to_spec(names: Sequence[str | None], rules: LogicalRules) -> PartitionSpec:
    """Maps logical names to a PartitionSpec with the first matching rule; a mesh axis is used once."""
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in names:
        axes = table.get(name) if name is not None else None
        if axes is None:
            out.append(None)
            continue
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
        axes_t = tuple(a for a in axes_t if a not in used)
        used.update(axes_t)
        out.append(axes_t[0] if len(axes_t) == 1 else (axes_t or None))
    return PartitionSpec(*out)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` through the active logical rules; identity when none are active."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    if len(names) != x.ndim:
        raise ValueError(f"logical names {tuple(names)} do not match array rank {x.ndim} (shape {x.shape})")
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(names, rules)))
