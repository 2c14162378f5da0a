"""Provably 1-Lipschitz (L2) layers for Wasserstein critics."""

from .activations import FullSort, GroupSort, MaxMin
from .bcop import BCOPConv2d
from .bjorck import bjorck_orthonormalize
from .padding import circular_pad
from .distance import DistanceMin
from .downsample import InvertibleDownsample
from .linear import BjorckLinear
from .ossn import OSSNConv2d
from .retract import retract_
from .rko import RKOConv2d

__all__ = [
    "BCOPConv2d",
    "BjorckLinear",
    "RKOConv2d",
    "OSSNConv2d",
    "GroupSort",
    "MaxMin",
    "FullSort",
    "InvertibleDownsample",
    "DistanceMin",
    "bjorck_orthonormalize",
    "circular_pad",
    "retract_",
]
