"""AdamW with linear warmup and a decay schedule, global-norm gradient clipping, optional EMA."""

from __future__ import annotations

import dataclasses

import jax
import optax

__all__ = ["OptimConfig", "make_schedule", "make_optimizer", "decay_mask", "frozen_labels"]


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 1e-4
    warmup_steps: int = 1000
    schedule: str = "cosine"  # "cosine", "linear" or "constant" after the warmup
    total_steps: int = 100_000  # warmup + decay
    end_lr_factor: float = 0.0  # final lr = learning_rate * end_lr_factor
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    ema_decay: float = 0.0  # 0 disables the EMA copy of the parameters
    # Parameter path prefixes ("encoder", "layers.attn1") that stay fixed: their updates are zero
    # (and XLA drops the gradient work only they need).
    frozen: tuple[str, ...] = ()

    def __post_init__(self):
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant'; got {self.schedule!r}")
        if self.warmup_steps < 0 or self.total_steps < max(1, self.warmup_steps):
            raise ValueError(f"need 0 <= warmup_steps <= total_steps; got {self.warmup_steps}, {self.total_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay}")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_factor
    decay_steps = max(1, cfg.total_steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_factor)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    else:
        after = optax.constant_schedule(peak)
    if cfg.warmup_steps == 0:
        return after
    # Warmup reaches the peak at step warmup_steps (starting from peak / warmup_steps, not 0, so step 0 learns).
    warmup = optax.linear_schedule(peak / cfg.warmup_steps, peak, cfg.warmup_steps)
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def decay_mask(params):
    """Weight decay on matrices only (kernels), not on biases, norm weights or modulation tables."""
    return jax.tree_util.tree_map_with_path(lambda path, _: str(getattr(path[-1], "key", "")) == "kernel", params)


def frozen_labels(params, prefixes: tuple[str, ...]):
    """ "frozen" for every parameter whose dotted path starts with one of `prefixes`, else "trained"."""

    def label(path, _):
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        return "frozen" if any(name == p or name.startswith(p + ".") for p in prefixes) else "trained"

    return jax.tree_util.tree_map_with_path(label, params)


def _zero_frozen(prefixes: tuple[str, ...]) -> optax.GradientTransformation:
    """Replaces the updates (or gradients) of frozen parameters by zeros. New zeros rather than
    `g * 0`: nothing then reads those gradients, so XLA drops the backward work only they need."""

    def update(updates, state, params=None):
        del params
        labels = frozen_labels(updates, prefixes)
        return jax.tree.map(
            lambda u, label: jax.numpy.zeros_like(u) if label == "frozen" else u, updates, labels
        ), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    schedule = make_schedule(cfg)
    tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    if cfg.frozen:
        # Zero gradients in (clipping then sees only the trained ones; Adam's moments stay 0, so its
        # update is exactly 0) and zero updates out (weight decay would still move them).
        frozen = tuple(cfg.frozen)
        tx = optax.chain(_zero_frozen(frozen), tx, _zero_frozen(frozen))
    return tx
