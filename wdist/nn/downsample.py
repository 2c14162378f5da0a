"""Invertible (orthogonal) downsampling."""

from __future__ import annotations

from torch import nn

__all__ = ["InvertibleDownsample"]


class InvertibleDownsample(nn.PixelUnshuffle):
    """Pixel unshuffle: (N, C, H, W) -> (N, C s^2, H/s, W/s).

    A permutation of coordinates, hence orthogonal: the standard way to
    stride an orthogonal network (Jacobsen et al., i-RevNet, 2018; used by
    BCOP).  H and W must be divisible by ``factor``.
    """

    def __init__(self, factor: int = 2) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        super().__init__(factor)
