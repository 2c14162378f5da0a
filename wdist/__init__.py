"""wdist: certified lower bounds on the Wasserstein-1 distance.

A facade: every name here is defined in a module below it (imports point down
only; ``tests/test_imports.py`` checks it).

>>> import wdist
>>> res = wdist.estimate_w1(x, y)          # doctest: +SKIP
>>> res.value, res.lower, res.upper, res.lipschitz   # doctest: +SKIP
"""

from . import nn
from ._version import __version__  # noqa: F401  (wdist.__version__)
from .checks import bracket, crosscheck
from .estimator import estimate_w1
from .exact import exact_w1
from .lipschitz import lipschitz_bound
from .report import load_critic, save_critic
from .results import Bracket, CrossCheck, W1Result

__all__ = ["nn", "estimate_w1", "W1Result", "exact_w1", "crosscheck", "CrossCheck", "lipschitz_bound", "bracket",
           "Bracket", "load_critic", "save_critic"]
