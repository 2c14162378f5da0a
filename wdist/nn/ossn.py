"""OSSN: one-sided spectral normalization of the reshaped kernel (BCOP paper baseline).

Spectral normalization (Miyato et al., ICLR 2018) estimates the largest
singular value ``sigma`` of the reshaped kernel ``M`` (out, in*k1*k2) by power
iteration (one step per training forward, vectors kept as buffers) and uses
``W = M / max(1, sigma)``: "one-sided" because it only scales down.

**Not a certified convolution bound.**  ``||M|| <= 1`` does not bound the
convolution: its Fourier symbol ``S(w) = M E(w)`` (see :mod:`wdist.nn.rko`)
can reach ``sqrt(k1*k2) ||M||``; a kernel whose k*k taps are all ``I / k``
has ``||M|| = 1`` and convolution norm ``k``.  This is the point of the
baseline: :func:`wdist.lipschitz_bound` reads the exact Fourier norm of the
kernel, so a critic built from these layers is certified by its *measured*
constant (often > 1), and :func:`wdist.estimate_w1` divides by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import CachedParametrization
from .sameconv import SameConv2d

__all__ = ["OSSNConv2d", "OSSNKernel"]


class OSSNKernel(CachedParametrization):
    """Parametrization raw (out, in, k1, k2) -> raw / max(1, sigma(reshaped raw)).

    Parameters
    ----------
    raw : Tensor (out, in, k1, k2)
        The initial kernel: its reshaped (out, in*k1*k2) matrix sizes the
        power-iteration vectors ``u`` (out) and ``v`` (in*k1*k2), which
        start converged on it.
    init_iters : int
        Power iterations run at construction.
    """

    def __init__(self, raw: torch.Tensor, init_iters: int = 20) -> None:
        super().__init__()
        out_features = raw.shape[0]
        in_features = raw[0].numel()
        self.register_buffer("_u", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("_v", F.normalize(torch.randn(in_features), dim=0))
        with torch.no_grad():
            for _ in range(init_iters):
                self._power_step(raw.flatten(1))

    @torch.no_grad()
    def _power_step(self, m: torch.Tensor) -> None:
        # In place: the buffers stay the same tensors (state_dict, .to()).
        self._v.copy_(F.normalize(m.mT @ self._u.to(m.dtype), dim=0))
        self._u.copy_(F.normalize(m @ self._v.to(m.dtype), dim=0))

    def build(self, raw: torch.Tensor) -> torch.Tensor:
        m = raw.flatten(1)
        if self.training:
            self._power_step(m.detach())
        # Clones: the buffers change in place at the next step, after backward.
        u, v = self._u.clone().to(m.dtype), self._v.clone().to(m.dtype)
        sigma = u @ (m @ v)  # a lower estimate of ||M||: not even ||M|| <= 1 is guaranteed
        return raw / sigma.clamp_min(1.0)


class OSSNConv2d(SameConv2d):
    """Convolution with a spectrally normalized reshaped kernel (NOT certified 1-Lipschitz).

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
    bias : bool
    padding : {"circular", "zeros"}
        Output has the input's spatial size (``padding="same"``).

    Notes
    -----
    The exact operator norm can be up to ``k`` times the reshaped matrix's
    norm; :func:`wdist.lipschitz_bound` measures it exactly.

    References
    ----------
    Miyato, Kataoka, Koyama, Yoshida. "Spectral Normalization for Generative
    Adversarial Networks", ICLR 2018.
    Li et al. "Preventing Gradient Attenuation in Lipschitz Constrained
    Convolutional Networks", NeurIPS 2019 (OSSN baseline).
    """

    #: Read by :func:`wdist.lipschitz.lipschitz_by_construction`: the reshaped
    #: kernel's norm does not bound the convolution's.
    lipschitz_by_construction = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        padding: str = "circular",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias, padding=padding)
        self.constrain_kernel_(OSSNKernel, unsafe=True)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", ossn=True"
