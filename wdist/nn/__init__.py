"""Provably 1-Lipschitz (L2) layers for Wasserstein critics."""

from .activations import FullSort, GroupSort, MaxMin
from .bcop import BCOPConv2d
from .bjorck import bjorck_orthonormalize
from .downsample import InvertibleDownsample
from .linear import BjorckLinear

__all__ = [
    "BCOPConv2d",
    "BjorckLinear",
    "GroupSort",
    "MaxMin",
    "FullSort",
    "InvertibleDownsample",
    "bjorck_orthonormalize",
]
