"""Training: flow-matching (DiT) and reconstruction + KL (VAE) objectives, optimizer, sharded train step,
Orbax checkpoints, the loop."""

from stepvideo_jax.training.dit_trainer import dit_trainer, lora_config_of
from stepvideo_jax.training.objective import ObjectiveConfig, flow_matching_loss
from stepvideo_jax.training.optimizer import OptimConfig, make_optimizer, make_schedule
from stepvideo_jax.training.state import Trainer
from stepvideo_jax.training.ti2v_init import widen_t2v_to_ti2v
from stepvideo_jax.training.vae_objective import VAEObjectiveConfig, vae_loss

__all__ = [
    "ObjectiveConfig",
    "OptimConfig",
    "Trainer",
    "VAEObjectiveConfig",
    "dit_trainer",
    "lora_config_of",
    "flow_matching_loss",
    "make_optimizer",
    "make_schedule",
    "vae_loss",
    "widen_t2v_to_ti2v",
]
