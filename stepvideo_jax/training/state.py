"""Train state and the jitted, sharded, donated train step.

The train state is a plain pytree (so Orbax saves it as is)::

    {"step": int32 [], "params": {...float32 master weights...}, "opt_state": optax state,
     "ema": {...} (only with ema_decay > 0), "rng": uint32 [2] raw PRNG key}

The model's compute dtype (bf16 for training) comes from its ``DiTConfig.dtype``; parameters stay in
``param_dtype`` (float32 master weights) and are cast per matmul. Parameters, optimizer moments and
the EMA copy are laid out by the logical-axis rules (``stepvideo_jax.sharding``); the batch is
sharded on its leading axis. The random stream of step s is ``fold_in(rng, s)``, so a run resumed at
step s draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stepvideo_jax import distributed
from stepvideo_jax.sharding import ShardingRules, logical_to_spec, model_shardings, use_mesh_rules
from stepvideo_jax.training.objective import ObjectiveConfig, flow_matching_loss
from stepvideo_jax.training.optimizer import OptimConfig, make_optimizer, make_schedule
from stepvideo_jax.training.vae_objective import VAEObjectiveConfig, vae_loss

__all__ = ["Trainer"]

# Compiled steps shared by every Trainer with the same model graph, configs, mesh, rules and batch
# shapes (a resumed run in the same process, tests), since compiling is the slow part on small runs.
_COMPILED_STEPS: dict[Any, Any] = {}


def _objective_loss(objective) -> Callable:
    """loss(model, batch, key, null_text) -> (loss, aux) for an objective config: the DiT's flow
    matching (``ObjectiveConfig``) or the VAE's reconstruction + KL (``VAEObjectiveConfig``)."""
    if isinstance(objective, ObjectiveConfig):
        return lambda model, batch, key, null_text: flow_matching_loss(model, batch, key, objective, null_text)
    if isinstance(objective, VAEObjectiveConfig):
        return lambda model, batch, key, null_text: vae_loss(model, batch, key, objective)
    raise ValueError(f"objective must be an ObjectiveConfig or VAEObjectiveConfig; got {type(objective).__name__}")


class Trainer:
    """Holds the model's graph, the optimizer and the shardings; builds states and runs steps.

    The objective config picks the loss: ``ObjectiveConfig`` trains a DiT on latents,
    ``VAEObjectiveConfig`` a Video-VAE on pixel clips."""

    def __init__(
        self,
        make_model: Callable[[nnx.Rngs], nnx.Module],
        optim: OptimConfig,
        objective: ObjectiveConfig | VAEObjectiveConfig,
        mesh: Mesh,
        rules: ShardingRules | None = None,
        trainable: type = nnx.Param,
    ):
        self.make_model, self.optim, self.objective = make_model, optim, objective
        self.mesh = mesh
        self.loss = _objective_loss(objective)
        self.tx = make_optimizer(optim)
        self.schedule = make_schedule(optim)
        abstract = nnx.eval_shape(lambda: make_model(nnx.Rngs(0)))
        self.rules = rules or type(abstract).SHARDING  # default: the network's own table
        # `trainable` (an nnx.Param subclass, e.g. LoRAParam) selects what the optimizer updates; the
        # other parameters are frozen: held once beside the state (`set_frozen`), never in it.
        self.trainable = trainable
        if trainable is nnx.Param:
            self.graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
            abstract_frozen = None
        else:
            self.graphdef, abstract_params, abstract_frozen, rest = nnx.split(abstract, trainable, nnx.Param, ...)
        others = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(rest)]
        if others:
            raise ValueError(f"the model has non-parameter state {others[:5]}; the trainer only handles nnx.Param")
        self.rest = rest
        self.param_shardings = nnx.to_pure_dict(model_shardings(abstract_params, mesh, self.rules))
        self.frozen_shardings = (
            None if abstract_frozen is None else nnx.to_pure_dict(model_shardings(abstract_frozen, mesh, self.rules))
        )
        self.frozen = None  # the frozen parameters (pure dict, on their shardings) once set
        self._abstract_frozen = None if abstract_frozen is None else nnx.to_pure_dict(abstract_frozen)
        self.abstract_params = jax.tree.map(
            lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
            nnx.to_pure_dict(abstract_params),
            self.param_shardings,
        )
        self.replicated = NamedSharding(mesh, PartitionSpec())
        abstract_opt = jax.eval_shape(self.tx.init, self.abstract_params)
        opt_shardings = optax.tree_map_params(
            self.tx,
            lambda _, s: s,
            abstract_opt,
            self.param_shardings,
            transform_non_params=lambda _: self.replicated,
        )
        self.state_shardings = {
            "step": self.replicated,
            "params": self.param_shardings,
            "opt_state": opt_shardings,
            "rng": self.replicated,
        }
        if optim.ema_decay > 0:
            self.state_shardings["ema"] = self.param_shardings

    # ------------------------------------------------------------------ states
    def params_of(self, model: nnx.Module) -> dict:
        """The trainable parameters of `model` (all of them unless a `trainable` filter was given)."""
        return nnx.to_pure_dict(nnx.split(model, self.trainable, ...)[1])

    def frozen_of(self, model: nnx.Module) -> dict:
        """The frozen (non-trainable) parameters of `model`."""
        return nnx.to_pure_dict(nnx.split(model, self.trainable, nnx.Param, ...)[2])

    def set_frozen(self, frozen: Mapping) -> None:
        """Places the frozen parameters (e.g. a base checkpoint's weights) on their shardings."""
        if self.frozen_shardings is None:
            raise ValueError("this trainer trains every parameter; there is nothing frozen to set")
        self.frozen = jax.device_put(dict(frozen), self.frozen_shardings)

    def abstract_frozen(self) -> dict | None:
        """Shapes, dtypes and shardings of the frozen parameters (None when every parameter trains):
        the `frozen` argument of a step compiled without the weights (deviceless plans)."""
        if self._abstract_frozen is None:
            return None
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self._abstract_frozen,
            self.frozen_shardings,
        )

    def model_of(self, params: Mapping, frozen: Mapping | None = None) -> nnx.Module:
        if self.frozen_shardings is None:
            return nnx.merge(self.graphdef, params, self.rest)
        frozen = self.frozen if frozen is None else frozen
        if frozen is None:
            raise ValueError("set_frozen() first: the frozen parameters are not set")
        return nnx.merge(self.graphdef, params, frozen, self.rest)

    def init_state(self, seed: int, params: Mapping | None = None) -> dict:
        """A fresh state: parameters from ``make_model(nnx.Rngs(seed))`` (or the given ones), built
        directly in their shardings; the train rng is ``key(seed)`` too."""

        def build(seed, params):
            key = jax.random.key(seed, impl="threefry2x32")
            if params is None:
                params = self.params_of(self.make_model(nnx.Rngs(key)))
            state = {
                "step": jnp.zeros((), jnp.int32),
                "params": params,
                "opt_state": self.tx.init(params),
                "rng": jax.random.key_data(key),
            }
            if self.optim.ema_decay > 0:
                state["ema"] = jax.tree.map(jnp.copy, params)
            return state

        seed = np.uint32(seed)
        if params is not None:
            # Given parameters (a converted checkpoint restored on one device, or on another layout) go to
            # their shardings first: a jit over the mesh refuses arguments committed to other devices.
            params = jax.device_put(dict(params), self.param_shardings)
            return jax.jit(build, out_shardings=self.state_shardings)(seed, params)
        # A random init compiles once per model graph, optimizer and mesh (the seed is traced).
        key = ("init", self.graphdef, self.optim, self.mesh, self.rules)
        if key not in _COMPILED_STEPS:
            _COMPILED_STEPS[key] = jax.jit(lambda s: build(s, None), out_shardings=self.state_shardings)
        return _COMPILED_STEPS[key](seed)

    def abstract_state(self) -> dict:
        """Shapes, dtypes and shardings of a state (the target of an Orbax restore)."""
        shapes = jax.eval_shape(lambda: self.init_state_shapes())
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, self.state_shardings
        )

    def init_state_shapes(self) -> dict:
        params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), self.abstract_params)
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": self.tx.init(params),
            "rng": jnp.zeros((2,), jnp.uint32),
        }
        if self.optim.ema_decay > 0:
            state["ema"] = params
        return state

    # ------------------------------------------------------------------ batches
    def batch_sharding(self, shape: tuple[int, ...]) -> NamedSharding:
        """Leading axis on the rules' batch axes (those that divide it), the rest replicated."""
        names = ("batch",) + (None,) * (len(shape) - 1)
        return NamedSharding(self.mesh, logical_to_spec(names, self.rules, shape=shape, mesh=self.mesh))

    def device_batch(self, batch: Mapping[str, np.ndarray]) -> dict:
        """Host (per-process) numpy batch -> global arrays sharded on the batch axis."""
        out = {}
        for k, v in batch.items():
            if isinstance(v, list):  # captions are consumed before this point
                continue
            v = np.asarray(v)
            global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
            out[k] = jax.make_array_from_process_local_data(self.batch_sharding(global_shape), v, global_shape)
        return out

    def device_replicated(self, tree):
        return jax.tree.map(lambda a: jax.device_put(np.asarray(a), self.replicated), tree)

    # ------------------------------------------------------------------ the step
    def _step_fn(self, state: dict, batch: dict, null_text: dict | None, fixed_noise: jax.Array, frozen=None):
        tx, optim = self.tx, self.optim
        key = jax.random.wrap_key_data(state["rng"], impl="threefry2x32")
        key = jax.random.fold_in(key, jnp.where(fixed_noise, 0, state["step"]))

        def loss_fn(params):
            return self.loss(self.model_of(params, frozen), batch, key, null_text)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
        if optim.ema_decay > 0:
            d = optim.ema_decay
            new_state["ema"] = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state["ema"], params)
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": self.schedule(state["step"])}
        return new_state, metrics

    def compiled_step(self, state: dict, batch: dict, null_text: dict | None):
        """The compiled step for these shapes (one per resolution bucket), cached; donates the state."""
        key = (
            self.graphdef,
            self.optim,
            self.objective,
            self.mesh,
            self.rules,
            tuple(sorted((k, v.shape, str(v.dtype)) for k, v in batch.items())),
            None if null_text is None else tuple(sorted((k, v.shape) for k, v in null_text.items())),
        )
        if key not in _COMPILED_STEPS:
            batch_shardings = {k: self.batch_sharding(v.shape) for k, v in batch.items()}
            null_shardings = None if null_text is None else jax.tree.map(lambda _: self.replicated, null_text)
            jitted = jax.jit(
                self._step_fn,
                in_shardings=(
                    self.state_shardings,
                    batch_shardings,
                    null_shardings,
                    self.replicated,
                    self.frozen_shardings,
                ),
                out_shardings=(self.state_shardings, self.replicated),
                donate_argnums=(0,),
            )
            with use_mesh_rules(self.mesh, self.rules):
                _COMPILED_STEPS[key] = jitted.lower(
                    state, batch, null_text, np.bool_(False), self._frozen_arg()
                ).compile()
            distributed.barrier("train step compiled")  # all processes start its collectives together
        return _COMPILED_STEPS[key]

    def step(self, state: dict, batch: dict, null_text: dict | None = None, *, fixed_noise: bool = False):
        """One update; returns (new state, metrics). The old state is donated.

        fixed_noise: draw t, noise and caption dropout from the step-0 stream at every step (to check
        that a fixed batch is learnt); normally step s uses ``fold_in(rng, s)``.
        """
        compiled = self.compiled_step(state, batch, null_text)
        return compiled(state, batch, null_text, np.bool_(fixed_noise), self._frozen_arg())

    def _frozen_arg(self):
        if self.frozen_shardings is not None and self.frozen is None:
            raise ValueError("set_frozen() first: the frozen parameters are not set")
        return self.frozen

    def step_flops(self, state: dict, batch: dict, null_text: dict | None = None) -> float:
        """FLOPs of one step's per-device program, from XLA's cost analysis of the compiled step."""
        cost = self.compiled_step(state, batch, null_text).cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else {}
        return float((cost or {}).get("flops", 0.0))
