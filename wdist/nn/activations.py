"""Gradient-norm-preserving activations (Anil, Lucas, Grosse, ICML 2019)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GroupSort", "MaxMin", "FullSort"]


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
        grouped = x.unflatten(1, (channels // size, size))
        if size == 2:  # MaxMin, cheaper than a sort
            a, b = grouped.unbind(2)
            out = torch.stack([torch.maximum(a, b), torch.minimum(a, b)], dim=2)
        else:
            out = grouped.sort(dim=2, descending=True).values
        return out.flatten(1, 2)

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
