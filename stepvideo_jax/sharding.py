"""Device mesh and logical-axis sharding: model code names logical axes, one rules table per network
maps them to mesh axes.

This module is the only place that knows about meshes.

* ``MeshConfig`` / ``make_mesh``: a mesh of at most four axes, ``data``, ``fsdp``, ``sequence`` and
  ``tensor`` (always present, size 1 when unused); one size may be ``-1`` to take the remaining
  devices. Multi-slice pods split each axis into an ICI part (inside a slice) and a DCN part
  (across slices).
* ``ShardingRules``: one named table for parameters and one for activations (the DiT names its
  hidden width ``embed`` on both, and FSDP shards that axis of the parameters but not of the
  activations). Each network declares its own next to its model (``dit/sharding.py``,
  ``text/sharding.py``, ``vae/sharding.py``) and enters it itself (``@enters_rules(TABLE)`` on its
  entry points); a caller only activates the mesh (``use_mesh``). A logical name that the active
  table does not know raises ``UnknownLogicalAxisError`` naming the name and the table.
* ``constrain(x, names)``: what model code calls on activations; the identity unless a mesh is
  active.
* ``create_sharded_model(make_model, mesh, rules)``: parameters created directly in their shardings
  (``nnx.eval_shape`` + ``jax.jit`` with out-shardings), never whole on one device.
  ``model_shardings(abstract_model, mesh, rules)``: the same shardings, for an Orbax restore.

Mapping is shape-aware: a mesh axis is only used for a dimension it divides (a CFG batch of 2 is
not split 8 ways); the axes a dimension cannot take stay free for the next logical name (so on an
FSDP mesh a batch of 2 leaves ``fsdp`` to the sequence).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "MESH_AXES",
    "MeshConfig",
    "make_mesh",
    "LogicalTable",
    "ShardingRules",
    "UnknownLogicalAxisError",
    "constrain",
    "use_mesh",
    "use_mesh_rules",
    "enters_rules",
    "current_mesh",
    "logical_to_spec",
    "current_mesh_rules",
    "mesh_axes_for",
    "create_sharded_model",
    "model_shardings",
    "replicated_fraction",
]

MESH_AXES = ("data", "fsdp", "sequence", "tensor")

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]


# ---------------------------------------------------------------------------------------------- mesh
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes inside a slice (ICI) and across slices (DCN); one ICI size may be -1."""

    data: int = 1
    fsdp: int = -1
    sequence: int = 1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_sequence: int = 1
    dcn_tensor: int = 1

    @classmethod
    def parse(cls, text: str) -> MeshConfig:
        """``"fsdp=2,tensor=4"`` (unnamed axes are 1, fsdp fills unless another axis is -1)."""
        fields: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in {f.name for f in dataclasses.fields(cls)}:
                raise ValueError(
                    f"mesh spec part {part!r} is not AXIS=SIZE with AXIS in {[f.name for f in dataclasses.fields(cls)]}"
                )
            fields[name.strip()] = int(value)
        if "fsdp" not in fields and -1 not in fields.values():
            fields["fsdp"] = 1 if fields else -1
        return cls(**fields)

    def ici_sizes(self, num_devices: int) -> tuple[int, ...]:
        """The four ICI axis sizes with the -1 resolved for ``num_devices`` devices per slice."""
        sizes = [self.data, self.fsdp, self.sequence, self.tensor]
        if sum(s == -1 for s in sizes) > 1:
            raise ValueError(f"at most one mesh axis may be -1; got {dict(zip(MESH_AXES, sizes))}")
        if any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"mesh axis sizes must be positive or -1; got {dict(zip(MESH_AXES, sizes))}")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} cannot fill {num_devices} devices")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices per slice; expected {num_devices}"
            )
        return tuple(sizes)

    @property
    def dcn_sizes(self) -> tuple[int, ...]:
        return (self.dcn_data, self.dcn_fsdp, self.dcn_sequence, self.dcn_tensor)


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``Mesh`` with axes ("data", "fsdp", "sequence", "tensor") (GSPMD auto axes)."""
    devices = list(jax.devices() if devices is None else devices)
    num_slices = math.prod(cfg.dcn_sizes)
    if len(devices) % num_slices:
        raise ValueError(f"{len(devices)} devices cannot be split into {num_slices} slices (DCN sizes {cfg.dcn_sizes})")
    ici = cfg.ici_sizes(len(devices) // num_slices)
    if num_slices > 1:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_hybrid_device_mesh(ici, cfg.dcn_sizes, devices=devices)
    elif devices[0].platform == "cpu":
        grid = np.asarray(devices).reshape(ici)
    else:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(ici, devices=devices)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


# --------------------------------------------------------------------------------------------- rules
class UnknownLogicalAxisError(ValueError):
    """A logical axis name that the active rules table does not map."""


class LogicalTable(tuple):
    """((logical name, mesh axes tried in order), ...) with a name for error messages."""

    name: str

    def __new__(cls, name: str, entries) -> LogicalTable:
        table = super().__new__(cls, tuple(entries))
        table.name = name
        return table

    def __getnewargs__(self):  # pickling / deep copies keep the name
        return (self.name, tuple(self))


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """Logical name -> mesh axes (tried in order), one table for parameters, one for activations."""

    params: LogicalTable
    activations: LogicalTable

    @classmethod
    def make(cls, name: str, *, params: dict, activations: dict) -> ShardingRules:
        """``ShardingRules.make("dit", params=dict(embed="fsdp", ...), activations=dict(...))``: each value is
        a mesh axis, a tuple of them (tried in order) or None (replicated)."""
        return cls(
            LogicalTable(f"{name}.params", _entries(params)), LogicalTable(f"{name}.activations", _entries(activations))
        )

    @property
    def name(self) -> str:
        return self.params.name.rsplit(".", 1)[0]


def _entries(table: dict) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for name, axes in table.items():
        axes_t = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        unknown = [a for a in axes_t if a not in MESH_AXES]
        if unknown:
            raise ValueError(f"logical axis {name!r} maps to unknown mesh axes {unknown}; expected some of {MESH_AXES}")
        out.append((name, axes_t))
    return tuple(out)


# (mesh, activation table or None): the mesh a caller activated, and the table of the network running.
_ACTIVE: contextvars.ContextVar[tuple[Mesh, LogicalRules | None] | None] = contextvars.ContextVar(
    "stepvideo_mesh_rules", default=None
)


def _activation_table(rules: ShardingRules | LogicalRules) -> tuple:
    return rules.activations if isinstance(rules, ShardingRules) else tuple(rules)


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[None]:
    """Activates a mesh for the networks called inside (each enters its own rules table); None: no-op."""
    if mesh is None:
        yield
        return
    token = _ACTIVE.set((mesh, None))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def use_mesh_rules(mesh: Mesh, rules: ShardingRules | LogicalRules) -> Iterator[None]:
    """Activates a mesh and an activation table explicitly (for code outside a network, e.g. a train
    step's batch constraints)."""
    token = _ACTIVE.set((mesh, _activation_table(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def enters_rules(rules: ShardingRules) -> Callable:
    """Decorator for a network's entry points: while the method runs, the active mesh (if any) uses
    this network's activation table."""

    def wrap(fn):
        @functools.wraps(fn)
        def entered(*args, **kwargs):
            active = _ACTIVE.get()
            if active is None:
                return fn(*args, **kwargs)
            token = _ACTIVE.set((active[0], rules.activations))
            try:
                return fn(*args, **kwargs)
            finally:
                _ACTIVE.reset(token)

        return entered

    return wrap


def current_mesh() -> Mesh | None:
    """The mesh activated by ``use_mesh`` / ``use_mesh_rules`` (None outside)."""
    active = _ACTIVE.get()
    return None if active is None else active[0]


def current_mesh_rules() -> tuple[Mesh, LogicalRules] | None:
    """(mesh, activation table) of the running network; None without a mesh. A mesh without a
    network's table (code outside every network's entry point) raises."""
    active = _ACTIVE.get()
    if active is None:
        return None
    if active[1] is None:
        raise UnknownLogicalAxisError(
            "a mesh is active but no network's sharding rules are: call the network's entry point "
            "(it enters its own table) or use use_mesh_rules(mesh, RULES)"
        )
    return active


def _axes_tuple(axes) -> tuple[str, ...]:
    return () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))


def logical_to_spec(
    names: Sequence[str | None],
    rules: ShardingRules | LogicalRules,
    *,
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
) -> PartitionSpec:
    """Maps logical names to a PartitionSpec; each mesh axis is used once. With ``shape`` and ``mesh``
    an axis is only used where it divides the dimension (what is left over stays available) and
    axes of size 1 are dropped."""
    entries = _activation_table(rules) if isinstance(rules, ShardingRules) else rules
    table = dict(entries)
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if name is not None and name not in table:
            raise UnknownLogicalAxisError(
                f"logical axis {name!r} is not in sharding table {getattr(entries, 'name', '(unnamed)')!r} "
                f"(it maps {sorted(table)})"
            )
        axes = _axes_tuple(table.get(name)) if name is not None else ()
        chosen: list[str] = []
        for a in axes:
            if a in used:
                continue
            if mesh is not None:
                size = mesh.shape[a]
                if size == 1:
                    continue
                if shape is not None and shape[i] % (math.prod(mesh.shape[c] for c in chosen) * size):
                    continue
            chosen.append(a)
        used.update(chosen)
        out.append(None if not chosen else (chosen[0] if len(chosen) == 1 else tuple(chosen)))
    return PartitionSpec(*out)


def mesh_axes_for(name: str, size: int) -> tuple[str, ...]:
    """Under the active mesh/rules: the mesh axes a lone dimension ``name`` of ``size`` maps to."""
    active = current_mesh_rules()
    if active is None:
        return ()
    mesh, rules = active
    return _axes_tuple(logical_to_spec((name,), rules, shape=(size,), mesh=mesh)[0])


def constrain(
    x: jax.Array,
    names: Sequence[str | None],
    *,
    like: tuple[Sequence[str | None], Sequence[int]] | None = None,
) -> jax.Array:
    """`with_sharding_constraint` through the active logical rules; identity when none are active.

    ``like=(names, shape)``: shard each named dimension of ``x`` as that dimension is sharded in an
    activation of ``shape`` (e.g. RoPE tables [N, D] sharded like the tokens of [B, N, H, D]).
    """
    active = current_mesh_rules()
    if active is None:
        return x
    mesh, rules = active
    if len(names) != x.ndim:
        raise ValueError(f"logical names {tuple(names)} do not match array rank {x.ndim} (shape {x.shape})")
    if like is None:
        spec = logical_to_spec(names, rules, shape=x.shape, mesh=mesh)
    else:
        like_names, like_shape = like
        by_name = dict(zip(like_names, logical_to_spec(like_names, rules, shape=like_shape, mesh=mesh)))
        spec = PartitionSpec(*(by_name.get(n) if n is not None else None for n in names))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# ---------------------------------------------------------------------------------------- parameters
def _variable_sharding(var: Any, mesh: Mesh, rules: ShardingRules) -> NamedSharding:
    names = None
    if isinstance(var, nnx.Variable):
        names = var.get_metadata().get("out_sharding")
        shape = var.shape
    else:
        shape = getattr(var, "shape", ())
    if not names:
        return NamedSharding(mesh, PartitionSpec())
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match parameter shape {tuple(shape)}")
    return NamedSharding(mesh, logical_to_spec(names, rules.params, shape=shape, mesh=mesh))


def model_shardings(abstract_model: nnx.Module | nnx.State, mesh: Mesh, rules: ShardingRules) -> nnx.State:
    """NamedSharding for every variable of a model (or state), from its logical names and
    ``rules.params`` (e.g. the target of an Orbax restore)."""
    state = abstract_model if isinstance(abstract_model, nnx.State) else nnx.state(abstract_model)
    return jax.tree.map(
        lambda v: _variable_sharding(v, mesh, rules), state, is_leaf=lambda v: isinstance(v, nnx.Variable)
    )


def create_sharded_model(make_model: Callable[[], nnx.Module], mesh: Mesh, rules: ShardingRules) -> nnx.Module:
    """Builds ``make_model()`` with every parameter created directly in its sharding (one jit whose
    out-shardings come from the logical names), so no device ever holds the whole model."""
    abstract = nnx.eval_shape(make_model)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = model_shardings(abstract_state, mesh, rules)

    def init() -> nnx.State:
        return nnx.split(make_model())[1]

    state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def replicated_fraction(model: nnx.Module) -> float:
    """Fraction of parameter bytes held whole on every device (no dimension sharded)."""
    total = replicated = 0
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        arr = var[...]
        nbytes = arr.size * arr.dtype.itemsize
        total += nbytes
        if arr.sharding.is_fully_replicated:
            replicated += nbytes
    return replicated / max(total, 1)
