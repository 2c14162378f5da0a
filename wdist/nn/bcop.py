"""BCOP: Block Convolution Orthogonal Parameterization (Li et al., NeurIPS 2019).

A k x k convolution kernel whose circular convolution is orthogonal is built
from free matrices (Xiao et al., 2018 construction):

* an orthogonal c x c matrix ``H`` (Björck-orthonormalized),
* 2(k-1) symmetric projectors ``P = V V^T``, ``V`` in R^{c x c/2} with
  orthonormal columns (rank c/2, the connected component the paper proves
  sufficient),
* each pair (P, Q) gives the 2 x 2 orthogonal kernel
  ``[[PQ, P(I-Q)], [(I-P)Q, (I-P)(I-Q)]]``, whose symbol (polynomial in the
  shifts z1, z2) is the product of the paraunitary factors
  ``(P + (I-P) z1)(Q + (I-Q) z2)``,
* the kernel is ``H B_1(z) ... B_{k-1}(z)``: a product of paraunitary
  polynomials, hence an orthogonal circular convolution.

We multiply the degree-one factors in one at a time (1 + 2 + ... taps, one
batched matrix product each, projectors never formed): 13 c x c products
for k = 3 against 33 for building the 2 x 2 blocks, convolving them and
multiplying every tap by H (the original construction).

The c x c kernel is then sliced to (out, in): for in <= out the layer is an
isometry (norm preserving), for in > out its rows are orthonormal
(1-Lipschitz, not norm preserving).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .bjorck import DEFAULT_BJORCK_ITERS, DEFAULT_BJORCK_TOL, bjorck_orthonormalize, bjorck_project
from .cache import CachedParametrization
from .sameconv import SameConv2d

__all__ = ["BCOPConv2d", "BCOPKernel"]


class _ProjectorFactor(torch.autograd.Function):
    """``T(z) -> T(z) (P + (I - P) z)`` along one tap axis, with a hand-written backward.

    ``taps`` : (h, w, c, c), tap [a, b] the coefficient of z1^a z2^b;
    ``v`` : (c, r) with orthonormal columns, ``P = V V^T``.  The product has one
    more tap along ``dim``: ``T'[a] = T[a] P + T[a-1] (I - P)``.  P is never
    formed: ``T P = (T V) V^T`` costs one c x c x c product per tap.

    Autograd through the same formula spends a third of the kernel build in
    copies (split, concatenation, negation, gradient accumulation); here the
    backward is two elementwise passes and four matrix products per tap:
    with ``D[a] = G[a] - G[a+1]`` (the gradient reaching ``T[a] P``),
    ``dT[a] = G[a+1] + D[a] P`` and ``dV = sum_a T[a]^T D[a] V + D[a]^T T[a] V``.
    """

    @staticmethod
    def forward(ctx, taps: torch.Tensor, v: torch.Tensor, dim: int) -> torch.Tensor:
        tv = taps @ v
        tp = tv @ v.mT
        n = taps.shape[dim]
        shape = list(taps.shape)
        shape[dim] = n + 1
        out = taps.new_empty(shape)
        out.narrow(dim, 0, n).copy_(tp)
        out.narrow(dim, n, 1).zero_()
        out.narrow(dim, 1, n).add_(taps).sub_(tp)
        ctx.dim = dim
        ctx.save_for_backward(taps, v, tv)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        taps, v, tv = ctx.saved_tensors
        dim, n, c, r = ctx.dim, taps.shape[ctx.dim], v.shape[0], v.shape[1]
        # The last factor receives the kernel gradient through the (out, in, kh, kw)
        # permutation: one transposing copy, then every pass below is contiguous.
        grad = grad.contiguous()
        d = grad.narrow(dim, 0, n) - grad.narrow(dim, 1, n)
        d_flat = d.reshape(-1, c)
        dv = d_flat @ v
        grad_taps = torch.addmm(grad.narrow(dim, 1, n).reshape(-1, c), dv, v.mT).view(taps.shape)
        grad_v = taps.reshape(-1, c).mT @ dv
        grad_v.addmm_(d_flat.mT, tv.reshape(-1, r))
        return grad_taps, grad_v, None


def _times_projector_factor(taps: torch.Tensor, v: torch.Tensor, dim: int) -> torch.Tensor:
    """``T(z) (P + (I - P) z)`` along tap axis ``dim`` (see :class:`_ProjectorFactor`)."""
    return _ProjectorFactor.apply(taps, v, dim)


def _orthonormal_basis(v: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of span(v), close to v's own columns (Cholesky QR).

    The projector ``V V^T`` depends only on the span, so this retraction leaves
    the kernel unchanged.  ``V = Q L^T`` with ``L`` the Cholesky factor of
    ``V^T V``: one Gram product and one triangular solve, a quarter of the
    cost of the three Björck iterations the polar factor needs after an Adam
    step (c = 512), and accurate to ~1e-6 for the well-conditioned ``V`` met
    here.  Householder QR (signs fixed) when the Cholesky factorization fails.
    """
    chol, info = torch.linalg.cholesky_ex(v.mT @ v)
    if not bool((info == 0).all()):
        q, r = torch.linalg.qr(v)
        signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        return q * torch.where(signs == 0, 1.0, signs).unsqueeze(-2)
    return torch.linalg.solve_triangular(chol.mT, v, upper=True, left=False)


class BCOPKernel(CachedParametrization):
    """Parametrization raw (2(k-1)+1, c, c) -> orthogonal-conv kernel (out, in, k, k)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bjorck_iters: int = DEFAULT_BJORCK_ITERS,
        bjorck_tol: float | None = DEFAULT_BJORCK_TOL,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.channels = max(in_channels, out_channels)
        self.rank = max(self.channels // 2, 1)
        self.bjorck_iters = bjorck_iters
        self.bjorck_tol = bjorck_tol

    @property
    def num_matrices(self) -> int:
        return 2 * (self.kernel_size - 1) + 1

    def init_raw(self) -> torch.Tensor:
        raw = torch.empty(self.num_matrices, self.channels, self.channels)
        for matrix in raw:
            nn.init.orthogonal_(matrix)
        return raw

    def _orthonormal_factors(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(H, V): Björck on H and, in one batch, on all projector factors."""
        h = bjorck_orthonormalize(raw[0], self.bjorck_iters, self.bjorck_tol)
        if self.kernel_size == 1:
            return h, None
        v = bjorck_orthonormalize(raw[1:, :, : self.rank], self.bjorck_iters, self.bjorck_tol)
        return h, v

    def project(self, raw: torch.Tensor) -> torch.Tensor:
        return self.project_(raw.clone())

    @torch.no_grad()
    def project_(self, raw: torch.Tensor) -> torch.Tensor:
        """In-place :meth:`project` (what :func:`wdist.nn.retract_` calls)."""
        raw[0] = bjorck_project(raw[0])
        if self.kernel_size > 1:
            raw[1:, :, : self.rank] = _orthonormal_basis(raw[1:, :, : self.rank])
        return raw

    def build(self, raw: torch.Tensor) -> torch.Tensor:
        h, v = self._orthonormal_factors(raw)
        taps = h[None, None]  # (1, 1, c, c)
        if v is not None:
            vs = v.unbind(0)  # unbind's backward stacks; indexing would zero-fill per factor
            for i in range(self.kernel_size - 1):
                taps = _times_projector_factor(taps, vs[2 * i], dim=0)
                taps = _times_projector_factor(taps, vs[2 * i + 1], dim=1)
        kernel = taps.permute(2, 3, 0, 1)  # (out, in, kh, kw)
        return kernel[: self.out_channels, : self.in_channels].contiguous()


class BCOPConv2d(SameConv2d):
    """Orthogonal convolution, provably 1-Lipschitz in L2 (BCOP).

    Parameters
    ----------
    in_channels, out_channels : int
        Any values.  ``in <= out``: the circular convolution is an isometry
        (all singular values 1); ``in > out``: orthonormal rows.
    kernel_size : int
        Any size >= 1, odd or even (even sizes pad asymmetrically, like
        ``padding="same"``).
    bias : bool
    padding : {"circular", "zeros"}
        Output has the input's spatial size.  Circular is exactly orthogonal;
        zero padding restricts the circular operator and is 1-Lipschitz.
    bjorck_iters, bjorck_tol :
        Björck iteration budget and early-exit tolerance.

    Notes
    -----
    ``self.weight`` is a real ``(out, in, k, k)`` kernel produced by a
    :mod:`torch.nn.utils.parametrize` parametrization; the free tensor lives in
    ``parametrizations.weight.original`` so ``state_dict`` round-trips.  The
    kernel is rebuilt once per training forward and cached in eval mode.

    References
    ----------
    Li, Haque, Anil, Lucas, Grosse, Jacobsen. "Preventing Gradient Attenuation
    in Lipschitz Constrained Convolutional Networks", NeurIPS 2019.
    Xiao et al. "Dynamical Isometry and a Mean Field Theory of CNNs", ICML 2018.
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
        kernel = BCOPKernel(in_channels, out_channels, kernel_size, bjorck_iters, bjorck_tol)
        self.constrain_kernel_(lambda free: kernel, kernel.init_raw(), unsafe=True)

    @property
    def kernel_builder(self) -> BCOPKernel:
        return self.parametrizations.weight[0]

    def extra_repr(self) -> str:
        return super().extra_repr() + ", bcop=True"
