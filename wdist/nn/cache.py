"""Eval-mode caching for weight parametrizations.

A constrained layer rebuilds its weight from free parameters on every
training forward (the gradient must flow through the construction).  In eval
mode the weight is a constant, so we build it once and reuse it until the
free parameter changes (any in-place update bumps ``Tensor._version``; moving
or replacing it changes ``data_ptr``) or the module returns to training mode.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CachedParametrization"]


class CachedParametrization(nn.Module):
    """Base class: subclasses implement :meth:`build` (raw -> weight).

    Attributes
    ----------
    builds : int
        How many times the weight was constructed (for tests and profiling).
    """

    def __init__(self) -> None:
        super().__init__()
        self.builds = 0
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None

    def build(self, raw: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, raw: torch.Tensor) -> torch.Tensor:
        """Free parameters mapped onto the constraint manifold (same shape as ``raw``).

        Used by :func:`wdist.nn.retract_` after an optimiser step so that the next
        Björck run starts orthonormal and exits after a few iterations.
        """
        return raw

    def project_(self, raw: torch.Tensor) -> torch.Tensor:
        """In place: ``raw.copy_(self.project(raw))``; subclasses may avoid the copy."""
        with torch.no_grad():
            return raw.copy_(self.project(raw))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._cache = None
            return self._build_counted(raw)
        key = (raw.data_ptr(), raw._version, raw.device, raw.dtype)
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self._build_counted(raw).detach()
            self._cache_key = key
        return self._cache

    def _build_counted(self, raw: torch.Tensor) -> torch.Tensor:
        self.builds += 1
        # Constrained weights are always built in full precision: under bf16
        # autocast the construction drifts (singular values up to 1.03).
        with torch.autocast(device_type=raw.device.type, enabled=False):
            if raw.dtype not in (torch.float32, torch.float64):
                raw = raw.float()
            return self.build(raw)

    def train(self, mode: bool = True) -> "CachedParametrization":
        self._cache = None
        self._cache_key = None
        return super().train(mode)
