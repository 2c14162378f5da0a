"""Dense layer with orthonormal rows or columns (Björck; Anil et al., ICML 2019)."""

from __future__ import annotations

import torch
from torch import nn

from .bjorck import DEFAULT_BJORCK_ITERS, DEFAULT_BJORCK_TOL, bjorck_orthonormalize, bjorck_project
from .cache import CachedParametrization

__all__ = ["BjorckLinear", "BjorckWeight"]


class BjorckWeight(CachedParametrization):
    """Parametrization raw (out, in) -> nearest matrix with orthonormal rows/columns."""

    def __init__(self, iters: int = DEFAULT_BJORCK_ITERS, tol: float | None = DEFAULT_BJORCK_TOL):
        super().__init__()
        self.iters = iters
        self.tol = tol

    def build(self, raw: torch.Tensor) -> torch.Tensor:
        return bjorck_orthonormalize(raw, self.iters, self.tol)

    def project(self, raw: torch.Tensor) -> torch.Tensor:
        return bjorck_project(raw)


class BjorckLinear(nn.Linear):
    """``y = W x + b`` with ``W`` orthonormalized: ``||W||_2 <= 1``.

    ``out >= in``: orthonormal columns, an isometry.  ``out < in``: orthonormal
    rows, gradient norm preserving (``W^T`` is an isometry); in particular
    ``BjorckLinear(d, 1)`` is a unit vector, the Lipschitz-safe way to reduce
    features to a scalar critic output.

    The weight is a :mod:`torch.nn.utils.parametrize` parametrization (cached
    in eval mode, float32 under autocast); ``state_dict`` stores the free
    matrix under ``parametrizations.weight.original``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        bjorck_iters: int = DEFAULT_BJORCK_ITERS,
        bjorck_tol: float | None = DEFAULT_BJORCK_TOL,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        BjorckWeight(bjorck_iters, bjorck_tol).register(self)
