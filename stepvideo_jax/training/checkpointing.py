"""Orbax checkpoints of a training run: train state (model, optimizer, step, rng) + data iterator state.

One ``CheckpointManager`` item per step with two entries: ``state`` (the train-state pytree, restored
straight into its shardings) and ``data`` (the grain iterator state, one JSON file per process).
Saving is asynchronous; the last ``max_to_keep`` steps are kept; a TPU preemption notice forces a save
at the step it is noticed (``reached_preemption``).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import grain
import orbax.checkpoint as ocp

__all__ = ["RunCheckpoints", "UNREADABLE_DIR"]

UNREADABLE_DIR = "unreadable_checkpoints"  # beside the checkpoints folder: steps that failed to restore


class _IteratorSnapshot:
    """The iterator state at save time, in the form grain's handler writes for non-dataset iterators."""

    def __init__(self, state: dict[str, Any]):
        self._encoded = json.dumps(state, indent=1).encode()

    def get_state(self) -> bytes:
        return self._encoded


class RunCheckpoints:
    def __init__(self, directory: str | os.PathLike, *, save_every: int, max_to_keep: int, async_save: bool = True):
        if save_every < 1 or max_to_keep < 1:
            raise ValueError(f"save_every and max_to_keep must be >= 1; got {save_every}, {max_to_keep}")
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_every,
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = os.path.abspath(os.fspath(directory))
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def should_save(self, step: int) -> bool:
        return self.manager.should_save(step)

    def reached_preemption(self, step: int) -> bool:
        return self.manager.reached_preemption(step)

    def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator | None, *, force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            # The iterator state is taken now: an async save must not see the iterator move on.
            items["data"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iterator.get_state()))
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator | None) -> Any:
        """Restores the state into the shardings of ``abstract_state`` and the iterator in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def restore_weights(self, step: int, abstract_state: Any) -> dict:
        """Only the network weights of a step ("params", and "ema" when ``abstract_state`` has it) into
        their shardings there: what exporting and sampling need, whatever optimizer the run used (frozen
        prefixes, another optax chain), so its state's other entries need not match."""
        wanted = {k: abstract_state[k] for k in ("params", "ema") if k in abstract_state}
        restore_args = ocp.checkpoint_utils.construct_restore_args(wanted)
        args = ocp.args.PyTreeRestore(wanted, restore_args=restore_args, partial_restore=True)
        return self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]

    def restore_newest_readable(
        self, abstract_state: Any, data_iterator: grain.DatasetIterator | None, *, warn=print
    ) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that restores, or (None, None) when there is none.

        When the newest steps fail to restore (truncated or missing array files, corrupt metadata)
        but an older one restores, the failed ones are moved to `../unreadable_checkpoints/STEP` (kept
        for inspection, out of the way of the steps this run saves again), with one `warn` line each.
        When no step restores (e.g. the state's structure changed), nothing is moved and a one-line
        ValueError names the newest step's problem."""
        failed: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state = self.restore(step, abstract_state, data_iterator)
            except (ValueError, OSError, KeyError, TypeError) as e:  # Orbax/TensorStore errors are these types
                failed.append((step, (str(e).strip().splitlines() or [type(e).__name__])[0][:200]))
                continue
            for bad, reason in failed:
                aside = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR, str(bad))
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(os.path.join(self.directory, str(bad)), aside)
                warn(
                    f"checkpoint step {bad} in {self.directory} is unreadable ({reason}); moved to {aside}; "
                    f"resumed from step {step}"
                )
            if failed:
                self.manager.reload()
            return step, state
        if failed:
            step, reason = failed[0]
            raise ValueError(
                f"{self.directory}: no checkpoint restores (step {step}: {reason}); "
                "resume with the config that wrote them or start a new --workdir"
            )
        return None, None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
