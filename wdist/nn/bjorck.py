"""Björck orthonormalization of (batches of) matrices.

The first-order Björck iteration (Björck & Bowie, 1971)

.. math::  W_{t+1} = W_t \\left(\\tfrac32 I - \\tfrac12 W_t^\\top W_t\\right)

maps each singular value ``s`` to ``1.5 s - 0.5 s^3``.  On ``[0, 1]`` that map
stays in ``[0, 1]`` and converges to 1, so if the input is first divided by an
*upper bound* of its largest singular value, every iterate has all singular
values <= 1: the 1-Lipschitz property holds even if the loop stops early.
Only norm preservation (singular values == 1) needs convergence.

We divide by ``sqrt(||W^T W||_inf)`` (max absolute row sum of the Gram
matrix), which bounds the spectral radius of the Gram matrix and is tight
(== 1) for a matrix that is already orthonormal, the usual case during
training.  A power-iteration estimate, as in the BCOP reference code, is a
*lower* bound of sigma_max and gives no such guarantee.
"""

from __future__ import annotations

import torch

__all__ = ["bjorck_orthonormalize", "DEFAULT_BJORCK_ITERS", "DEFAULT_BJORCK_TOL"]

DEFAULT_BJORCK_ITERS = 50
#: Stop once max |W^T W - I| <= tol, i.e. every singular value is within ~tol/2 of 1.
DEFAULT_BJORCK_TOL = 1e-6


def bjorck_orthonormalize(
    w: torch.Tensor,
    iters: int = DEFAULT_BJORCK_ITERS,
    tol: float | None = DEFAULT_BJORCK_TOL,
) -> torch.Tensor:
    """Closest matrix with orthonormal rows or columns, batched.

    Parameters
    ----------
    w : Tensor, shape (..., n, m)
        Matrices to orthonormalize.  Tall matrices (n >= m) get orthonormal
        columns, wide ones orthonormal rows.  Computed in float32 or float64
        (lower precisions are promoted, autocast is disabled) because bf16
        construction yields singular values up to 1.03.
    iters : int
        Maximum number of iterations.
    tol : float or None
        Early exit once ``max |W^T W - I| <= tol`` over the whole batch; ``None``
        runs exactly ``iters`` iterations.

    Returns
    -------
    Tensor, same shape as ``w``, every singular value <= 1 (up to rounding),
    == 1 at convergence.
    """
    device_type = w.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        if w.dtype not in (torch.float32, torch.float64):
            w = w.float()
        wide = w.shape[-2] < w.shape[-1]
        if wide:
            w = w.mT
        gram = w.mT @ w
        # sigma_max^2 = rho(W^T W) <= ||W^T W||_inf: a guaranteed upper bound.
        scale2 = gram.abs().sum(-1).amax(-1).clamp_min(torch.finfo(w.dtype).tiny)
        w = w / scale2.sqrt()[..., None, None]
        gram = gram / scale2[..., None, None]
        eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
        for _ in range(iters):
            if tol is not None and float((gram.detach() - eye).abs().amax()) <= tol:
                break
            w = 1.5 * w - 0.5 * (w @ gram)
            gram = w.mT @ w
        return w.mT if wide else w
