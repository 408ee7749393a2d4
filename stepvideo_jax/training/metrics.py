"""Training metrics: stdout lines (through the progress bar) and TensorBoard event files."""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
from absl import logging

__all__ = ["MetricsWriter", "format_metrics"]


def format_metrics(step: int, metrics: Mapping[str, float]) -> str:
    parts = []
    for k, v in metrics.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return f"step {step}: " + " ".join(parts)


class MetricsWriter:
    """Writes scalars to ``logdir`` (TensorBoard, process 0 only) and logs them."""

    def __init__(self, logdir: str | None, echo=None):
        self.echo = echo or logging.info
        self.writer = None
        if logdir and jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            os.makedirs(logdir, exist_ok=True)
            self.writer = SummaryWriter(logdir)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if jax.process_index() == 0:
            self.echo(format_metrics(step, metrics))
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"train/{k}", float(v), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
