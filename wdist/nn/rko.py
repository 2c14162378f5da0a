"""RKO: reshaped kernel orthogonalization (Cisse et al., 2017; BCOP paper baseline).

The kernel ``W`` (out, in, k1, k2) is reshaped to the matrix
``M`` (out, in*k1*k2), Björck-orthonormalized, reshaped back and divided by
``sqrt(k1*k2)``.

Why this is 1-Lipschitz: the Fourier symbol of the circular convolution at a
frequency ``w`` is ``S(w) = sum_ab W[:, :, a, b] e^{-i<w, (a,b)>}
= M E(w)`` with ``E(w)`` the (in*k1*k2, in) stack of the k1*k2 blocks
``e^{-i<w,(a,b)>} I``, whose norm is exactly ``sqrt(k1*k2)``.  So
``||S(w)|| <= sqrt(k1*k2) ||M|| = sqrt(k1*k2)`` before the scaling, and the
scaled layer has norm <= 1 on every grid (zero padding restricts it).  The
bound is loose: unlike BCOP the layer is far from norm preserving (a
constant image is mapped with gain ``||M E(0)|| / k``, often well below 1),
which is the gradient attenuation the BCOP paper measures.
"""

from __future__ import annotations

import math

import torch

from .bjorck import DEFAULT_BJORCK_ITERS, DEFAULT_BJORCK_TOL, bjorck_orthonormalize, bjorck_project
from .cache import CachedParametrization
from .sameconv import SameConv2d

__all__ = ["RKOConv2d", "RKOKernel"]


class RKOKernel(CachedParametrization):
    """Parametrization raw (out, in, k1, k2) -> orthonormalized reshaped kernel / sqrt(k1 k2)."""

    def __init__(self, iters: int = DEFAULT_BJORCK_ITERS, tol: float | None = DEFAULT_BJORCK_TOL) -> None:
        super().__init__()
        self.iters = iters
        self.tol = tol

    def build(self, raw: torch.Tensor) -> torch.Tensor:
        taps = raw.shape[-2] * raw.shape[-1]
        return bjorck_orthonormalize(raw.flatten(1), self.iters, self.tol).view_as(raw) / math.sqrt(taps)

    def project(self, raw: torch.Tensor) -> torch.Tensor:
        return bjorck_project(raw.flatten(1)).view_as(raw)


class RKOConv2d(SameConv2d):
    """Convolution whose reshaped kernel is orthonormal, scaled to be 1-Lipschitz.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
    bias : bool
    padding : {"circular", "zeros"}
        Output has the input's spatial size (``padding="same"``).
    bjorck_iters, bjorck_tol :
        Björck budget for the (out, in*k*k) matrix.

    Notes
    -----
    ``||conv|| <= ||M|| = 1`` on every grid (see the module docstring), so
    :func:`wdist.lipschitz_bound` (exact Fourier norm) certifies it <= 1.

    References
    ----------
    Cisse, Bojanowski, Grave, Dauphin, Usunier. "Parseval Networks", ICML 2017.
    Li et al. "Preventing Gradient Attenuation in Lipschitz Constrained
    Convolutional Networks", NeurIPS 2019 (RKO baseline, Sec. 4).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        padding: str = "circular",
        bjorck_iters: int = DEFAULT_BJORCK_ITERS,
        bjorck_tol: float | None = DEFAULT_BJORCK_TOL,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias, padding=padding)
        self.constrain_kernel_(lambda free: RKOKernel(bjorck_iters, bjorck_tol))

    def extra_repr(self) -> str:
        return super().extra_repr() + ", rko=True"
