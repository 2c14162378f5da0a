"""wdist: certified lower bounds on the Wasserstein-1 distance.

>>> import wdist
>>> res = wdist.estimate_w1(x, y)          # doctest: +SKIP
>>> res.value, res.lower, res.upper, res.lipschitz   # doctest: +SKIP
"""

from . import nn
from .bracketing import Bracket, bracket
from .estimator import W1Result, estimate_w1
from .exact import CrossCheck, crosscheck, exact_w1
from .lipschitz import lipschitz_bound

__version__ = "0.1.0"
__all__ = ["nn", "estimate_w1", "W1Result", "exact_w1", "crosscheck", "CrossCheck", "lipschitz_bound", "bracket", "Bracket"]
