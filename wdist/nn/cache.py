"""The base of every constrained weight: construction, eval cache, retraction.

A constrained layer rebuilds its weight from free parameters on every
training forward (the gradient must flow through the construction).  In eval
mode the weight is a constant, so we build it once and reuse it until the
free parameter changes (any in-place update bumps ``Tensor._version``; moving
or replacing it changes ``data_ptr``) or the module returns to training mode.
After an optimiser step the free parameters are retracted onto their
manifold (:meth:`CachedParametrization.project_`, applied to a whole network
by :func:`wdist.nn.retract_`), so that the next construction starts there.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["CachedParametrization", "constrained_weights"]


class CachedParametrization(nn.Module):
    """Base class of constrained weights (a :mod:`torch.nn.utils.parametrize` parametrization).

    The whole contract lives here: subclasses implement :meth:`build`
    (raw -> weight) and, when the free parameters live on a manifold,
    :meth:`project` (the retraction); this class registers itself on a layer
    (:meth:`register`), caches the built weight in eval mode, builds in full
    precision under autocast, and retracts in place (:meth:`project_`).

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

    def register(self, module: nn.Module, name: str = "weight", *, unsafe: bool = False) -> nn.Module:
        """Make ``module.<name>`` the weight this builds from the free tensor now in ``module.<name>``.

        ``unsafe=True`` when the built weight has another shape than the free
        tensor (torch's name for skipping its shape check).
        """
        parametrize.register_parametrization(module, name, self, unsafe=unsafe)
        return module

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


def constrained_weights(module: nn.Module) -> Iterator[tuple[CachedParametrization, torch.Tensor]]:
    """(builder, free tensor) of every constrained weight in ``module``."""
    for layer in module.modules():
        if not parametrize.is_parametrized(layer):
            continue
        for plist in layer.parametrizations.values():
            if isinstance(plist[0], CachedParametrization):
                yield plist[0], plist.original
