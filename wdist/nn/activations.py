"""Gradient-norm-preserving activations (Anil, Lucas, Grosse, ICML 2019)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GroupSort", "MaxMin", "FullSort"]


class _MaxMinFunction(torch.autograd.Function):
    """``(a, b) -> (max(a, b), min(a, b))`` on channel pairs (2i, 2i+1).

    The backward routes each output gradient to the input it came from: a
    permutation, so gradient norms are preserved exactly, ties included (a tie
    sends ``a`` the max's gradient).  Autograd through ``torch.maximum`` /
    ``torch.minimum`` splits ties in halves and spends most of a critic's
    activation time in comparisons and masked fills; this backward is one
    ``where`` per output half.  It is built from differentiable operations,
    so double backward (gradient penalties) works.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        a, b = x.unflatten(1, (x.shape[1] // 2, 2)).unbind(2)
        a_is_max = a >= b
        ctx.save_for_backward(a_is_max)
        return torch.stack([torch.where(a_is_max, a, b), torch.where(a_is_max, b, a)], dim=2).flatten(1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (a_is_max,) = ctx.saved_tensors
        g_max, g_min = grad.unflatten(1, (grad.shape[1] // 2, 2)).unbind(2)
        return torch.stack([torch.where(a_is_max, g_max, g_min), torch.where(a_is_max, g_min, g_max)],
                           dim=2).flatten(1, 2)


class GroupSort(nn.Module):
    """Sort channels (dim 1) in descending order within contiguous groups.

    A permutation of its input everywhere, so it is 1-Lipschitz and its
    Jacobian is orthogonal almost everywhere (gradient norm preserving).
    ``group_size=2`` is MaxMin; ``group_size=None`` sorts all channels.
    Works on (N, C) and (N, C, H, W) inputs.
    """

    def __init__(self, group_size: int | None = 2) -> None:
        super().__init__()
        if group_size is not None and group_size < 1:
            raise ValueError(f"group_size must be >= 1 or None, got {group_size}")
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        size = channels if self.group_size is None else self.group_size
        if channels % size:
            raise ValueError(f"GroupSort: {channels} channels not divisible by group size {size}")
        if size == 2:  # MaxMin, cheaper than a sort
            return _MaxMinFunction.apply(x)
        grouped = x.unflatten(1, (channels // size, size))
        return grouped.sort(dim=2, descending=True).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(GroupSort):
    """GroupSort with groups of two: ``(a, b) -> (max(a, b), min(a, b))``."""

    def __init__(self) -> None:
        super().__init__(2)

    def extra_repr(self) -> str:
        return ""


class FullSort(GroupSort):
    """GroupSort over all channels."""

    def __init__(self) -> None:
        super().__init__(None)

    def extra_repr(self) -> str:
        return ""
