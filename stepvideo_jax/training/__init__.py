"""Training: flow-matching objective, optimizer, sharded train step, Orbax checkpoints, the loop."""

from stepvideo_jax.training.objective import ObjectiveConfig, flow_matching_loss
from stepvideo_jax.training.optimizer import OptimConfig, make_optimizer, make_schedule
from stepvideo_jax.training.state import Trainer
from stepvideo_jax.training.ti2v_init import widen_t2v_to_ti2v

__all__ = [
    "ObjectiveConfig",
    "OptimConfig",
    "Trainer",
    "flow_matching_loss",
    "make_optimizer",
    "make_schedule",
    "widen_t2v_to_ti2v",
]
