"""Atomic training checkpoints.

Saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``:
only tensors, numbers, strings, lists and dicts, never arbitrary pickles.
Written to a temporary file and renamed over the target, so a process killed
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["Checkpointer", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


class Checkpointer:
    """Save a :class:`~wdist.training.CriticTrainer` every ``every`` steps.

    Parameters
    ----------
    directory : path
        Folder holding ``checkpoint.pt`` (created if missing).
    every : int
        Minimum number of steps between two saves (saves happen at evaluations).
    """

    def __init__(self, directory: str | Path, every: int) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CHECKPOINT_NAME
        self.every = max(1, int(every))
        self._last = -1

    def _signature(self, trainer) -> dict:
        cfg = trainer.cfg
        return {
            "seed": cfg.seed, "batch_size": cfg.batch_size, "max_steps": cfg.max_steps,
            "n_train": [len(trainer.train_idx[0]), len(trainer.train_idx[1])],
        }

    def maybe_save(self, trainer) -> None:
        step = trainer.state.step
        if self._last >= 0 and step - self._last < self.every:
            return
        self.save(trainer)

    def save(self, trainer) -> None:
        """Write the checkpoint (rank 0 only in a process group: all ranks hold the same state)."""
        from . import distributed

        self._last = trainer.state.step
        if not distributed.is_main():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"signature": self._signature(trainer), "trainer": trainer.state_dict()}
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        torch.save(payload, tmp)
        os.replace(tmp, self.path)

    def restore(self, trainer) -> bool:
        """Load the checkpoint into ``trainer``; False when there is none yet."""
        if not self.path.exists():
            return False
        try:
            payload = torch.load(self.path, map_location=trainer.device, weights_only=True)
        except Exception as exc:  # corrupt or foreign file
            raise ValueError(f"checkpoint: cannot read {self.path}: {exc}") from exc
        if payload.get("signature") != self._signature(trainer):
            raise ValueError(
                f"checkpoint: {self.path} was written with other settings "
                f"{payload.get('signature')} (now {self._signature(trainer)})"
            )
        trainer.load_state_dict(payload["trainer"])
        self._last = trainer.state.step
        return True
