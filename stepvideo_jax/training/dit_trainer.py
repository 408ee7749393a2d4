"""The DiT's trainer for a training config: full training, or LoRA (adapters trained, base frozen).

Shared by the training loop (`training.loop`) and the deviceless TPU plan (`tools.tpu_plan`), so the
plan compiles the step the loop runs."""

from __future__ import annotations

from jax.sharding import Mesh

from stepvideo_jax.config import dataclass_from
from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.lora import LoRAConfig, LoRAParam, apply_lora
from stepvideo_jax.sharding import ShardingRules
from stepvideo_jax.training.objective import ObjectiveConfig
from stepvideo_jax.training.optimizer import OptimConfig
from stepvideo_jax.training.state import Trainer

__all__ = ["lora_config_of", "dit_trainer"]


def lora_config_of(config) -> tuple[LoRAConfig, int] | None:
    """(LoRAConfig, adapter init seed) when the config has a `lora` section with a rank, else None."""
    section = config.get("lora")
    if not section or not section.get("rank"):
        return None
    fields = {k: v for k, v in section.items() if k != "seed"}
    return dataclass_from(LoRAConfig, fields), int(section.get("seed", 0))


def dit_trainer(
    model_cfg: DiTConfig,
    optim: OptimConfig,
    objective: ObjectiveConfig,
    mesh: Mesh,
    *,
    lora: tuple[LoRAConfig, int] | None = None,
    rules: ShardingRules | None = None,
    require_targets: bool = True,
) -> Trainer:
    """A `Trainer` of the DiT. With `lora` (config, adapter seed) the model is `apply_lora` of the DiT
    and only the `LoRAParam`s train; the base weights (float, or int8 / fp8 with `model_cfg.quantize`:
    QLoRA) are frozen beside the state (`Trainer.set_frozen`, or the `frozen` argument of the step).
    `require_targets=False` accepts a model where no layer matches (the plan's 0-layer stack)."""
    if lora is None:
        return Trainer(lambda rngs: StepVideoDiT(model_cfg, rngs=rngs), optim, objective, mesh, rules)
    lora_cfg, lora_seed = lora
    return Trainer(
        lambda rngs: apply_lora(
            StepVideoDiT(model_cfg, rngs=rngs), lora_cfg, seed=lora_seed, require_targets=require_targets
        ),
        optim,
        objective,
        mesh,
        rules,
        trainable=LoRAParam,
    )
