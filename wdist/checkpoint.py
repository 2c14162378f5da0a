"""Training checkpoints: atomic saves, the run signature, and the preflight.

A checkpoint folder holds one ``<critic>/checkpoint.pt`` per trained critic
(:class:`Checkpointer`) and one ``signature.json``: the settings of the run
that wrote it (:func:`preflight` refuses to overwrite a checkpoint without
``resume`` and to resume one with other settings).  Each ``checkpoint.pt``
also records its trainer's own settings (seed, batch, steps, split sizes),
checked when it is restored.

Saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``:
only tensors, numbers, strings, lists and dicts, never arbitrary pickles.
Written to a temporary file and renamed over the target, so a process killed
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import distributed

__all__ = ["Checkpointer", "CHECKPOINT_NAME", "SIGNATURE_NAME", "checkpoint_steps", "preflight"]

CHECKPOINT_NAME = "checkpoint.pt"
SIGNATURE_NAME = "signature.json"


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename over ``path``: a process killed mid-write leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def checkpoint_steps(directory: str | Path) -> dict[str, int]:
    """Training step saved in each critic's checkpoint under ``directory`` (-1: unreadable)."""
    steps = {}
    for path in sorted(Path(directory).glob(f"*/{CHECKPOINT_NAME}")):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            steps[path.parent.name] = int(payload["trainer"]["progress"]["step"])
        except Exception:  # unreadable or foreign: restoring it reports the problem
            steps[path.parent.name] = -1
    return steps


def preflight(directory: str | Path, signature: dict, resume: bool) -> str:
    """Check a checkpoint folder before training; returns a note for the user.

    Every rank checks (so all stop on the same error, inside
    :func:`wdist.distributed.agreement`); rank 0 then writes ``signature``
    (JSON-safe settings of the run) to ``signature.json``.

    Raises
    ------
    ValueError
        ``directory`` holds a checkpoint and ``resume`` is False, or it was
        written with another signature (the differing keys are named).
    """
    directory = Path(directory)
    with distributed.agreement():
        note = _check_signature(directory, signature, resume)
    if distributed.is_main():
        text = json.dumps(signature, indent=2) + "\n"
        _atomic_write(directory / SIGNATURE_NAME, lambda p: p.write_text(text))
    return note


def _check_signature(directory: Path, signature: dict, resume: bool) -> str:
    existing = checkpoint_steps(directory) if directory.exists() else {}
    if not existing:
        return f"no checkpoint in {directory} yet: starting from the beginning" if resume else ""
    if not resume:
        raise ValueError(f"checkpoint: {directory} already holds a checkpoint: add resume=True to continue "
                         f"it, or choose an empty folder")
    saved_file = directory / SIGNATURE_NAME
    saved = json.loads(saved_file.read_text()) if saved_file.exists() else None
    if saved is not None and saved != signature:
        diff = sorted(k for k in set(saved) | set(signature) if saved.get(k) != signature.get(k))
        raise ValueError(f"cannot resume {directory}: it was written with other settings ({', '.join(diff)})")
    where = ", ".join(f"{k} at step {v}" for k, v in existing.items())
    return f"resuming from checkpoint {directory} ({where})"


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
            # A run without the parameter average (or with other drops) trains another critic;
            # checkpoints written before them lack these keys and are refused by name.
            "ema": cfg.ema, "lr_drops": cfg.lr_drops,
        }

    def maybe_save(self, trainer) -> None:
        step = trainer.state.step
        if self._last >= 0 and step - self._last < self.every:
            return
        self.save(trainer)

    def save(self, trainer) -> None:
        """Write the checkpoint (rank 0 only in a process group: all ranks hold the same state)."""
        self._last = trainer.state.step
        if not distributed.is_main():
            return
        payload = {"signature": self._signature(trainer), "trainer": trainer.state_dict()}
        _atomic_write(self.path, lambda p: torch.save(payload, p))

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
