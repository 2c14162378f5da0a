"""wdist: certified lower bounds on the Wasserstein-1 distance."""

from . import nn
from .lipschitz import lipschitz_bound

__version__ = "0.1.0"
__all__ = ["nn", "lipschitz_bound"]
