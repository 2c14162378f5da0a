"""Retraction of constrained layers onto their manifold after an optimiser step."""

from __future__ import annotations

import torch
from torch import nn

from .cache import constrained_weights

__all__ = ["retract_"]


@torch.no_grad()
def retract_(module: nn.Module) -> nn.Module:
    """Replace every constrained layer's free parameters by their orthonormalised version.

    The weights a layer computes are unchanged up to the Björck tolerance
    (the projection of an orthonormal matrix is itself), but the next
    construction starts on the manifold and needs two or three Björck
    iterations instead of tens: the raw parameters no longer drift away
    under Adam.  Certificates never depend on it: :func:`wdist.lipschitz_bound`
    reads the weights as they are.
    """
    for builder, free in constrained_weights(module):
        builder.project_(free)
    return module
