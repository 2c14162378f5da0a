"""Bracket the population W1 from both sides.

Lower side
    For the trained critic g (certified 1-Lipschitz after division by its
    bound), the test-split gap is an unbiased estimate of
    ``E_P g - E_Q g <= W1(P, Q)`` (Kantorovich-Rubinstein).  The one-sided
    lower confidence bound ``gap - z_{conf} * se`` is therefore below W1 with
    probability >= ``confidence`` (CLT).

Upper side
    W1 is jointly convex in its two arguments and ``E[P_m] = P`` for the
    empirical measure of m i.i.d. samples, so by Jensen
    ``W1(P, Q) = W1(E P_m, E Q_m) <= E W1(P_m, Q_m)``: the exact sample W1 is
    an upper bound *in expectation*.  We average it over ``repeats`` disjoint
    subsamples of size m (independent draws, so the Student-t interval is
    valid) and add the one-sided margin ``t_{conf, r-1} * sd / sqrt(r)``.

    The upper side is loose in high dimension: ``E W1(P_m, Q_m) - W1(P, Q)``
    decays like ``m^(-1/d)`` (Dudley; Fournier & Guillin 2015), so for images
    it is dominated by sampling noise; ``noise_floor`` (exact W1 between two
    disjoint size-m subsamples of x, whose population value is 0) shows how
    much.

``confidence`` is the level of the *bracket*: each side is computed at
``(1 + confidence) / 2``, so by the union bound both hold together with
probability >= ``confidence`` (the critic's lower side alone fails about
2.5% of the time when the critic is optimal, e.g. a 1-D mixture).  ``lower > upper`` can only
happen through a broken certificate or too few samples; it is reported
loudly (``consistent=False`` and a warning), never hidden.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np
import scipy.stats
import torch

from .data import as_samples
from .exact import DEFAULT_MAX_POINTS, _as_matrix, _exact_from_arrays, exact_memory_bytes

__all__ = ["bracket", "Bracket", "choose_subsample_size", "upper_bound", "MAX_AUTO_M"]

#: Largest automatic subsample: one exact solve of 4000 x 4000 takes 8-16 s and 0.6 GB.
MAX_AUTO_M = 4000
MAX_AUTO_REPEATS = 10


@dataclass
class Bracket:
    """Two-sided statement about the population W1(P, Q).

    Attributes
    ----------
    lower : float
        One-sided ``(1 + confidence) / 2`` lower bound from the certified critic.
    upper : float
        One-sided ``(1 + confidence) / 2`` upper bound: mean exact W1 of
        size-m subsamples plus a Student-t margin.
    width : float
        ``upper - lower``.
    m, repeats : int
        Subsample size and number of disjoint subsamples per side.
    upper_mean : float
        Mean exact W1 over the subsamples (upper bound in expectation).
    upper_values : list of float
        The individual exact values.
    noise_floor : float
        Exact W1 between two disjoint size-m subsamples of x (population value 0).
    consistent : bool
        ``lower <= upper``; False signals a broken certificate or too few samples.
    """

    lower: float
    upper: float
    width: float
    m: int
    repeats: int
    upper_mean: float
    upper_values: list[float] = field(default_factory=list)
    noise_floor: float = float("nan")
    critic_value: float = float("nan")
    confidence: float = 0.95
    consistent: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        pct = round(100 * self.confidence)
        return (f"W1 in [{self.lower:.6g}, {self.upper:.6g}] ({pct}% bracket; width "
                f"{self.width:.3g}, exact on {self.repeats} x {self.m} subsamples, noise floor "
                f"{self.noise_floor:.3g})")


def choose_subsample_size(n_x: int, n_y: int, max_points: int = DEFAULT_MAX_POINTS) -> tuple[int, int]:
    """Automatic (m, repeats).

    Rule: m is as large as possible while (i) each side still gives at least
    four disjoint subsamples, (ii) one solve stays under ``MAX_AUTO_M``
    points (~16 s, 0.6 GB) and ``max_points``.  Then as many disjoint repeats
    as fit, at most 10.  Four rather than two repeats: with two, the spread
    estimate is so unstable that the Student-t margin missed W1 in 1 of 20
    runs on a 1-D mixture (t quantile 12.7 at 97.5%, yet two close values).
    """
    n = min(n_x, n_y)
    if n < 8:
        raise ValueError(f"bracket: need at least 8 samples per side, got {n}")
    m = min(n // 4, MAX_AUTO_M, max_points)
    return m, min(MAX_AUTO_REPEATS, n // m)


def upper_bound(
    x, y, *, m: int | None = None, repeats: int | None = None, confidence: float = 0.95,
    seed: int = 0, max_points: int = DEFAULT_MAX_POINTS,
) -> tuple[float, float, list[float], float, int, int]:
    """(upper, mean, values, noise_floor, m, repeats) from exact solves on disjoint subsamples."""
    a = _as_matrix(as_samples(x, "x", dtype=torch.float64))
    b = _as_matrix(as_samples(y, "y", dtype=torch.float64))
    auto_m, auto_r = choose_subsample_size(len(a), len(b), max_points)
    m = m or auto_m
    n = min(len(a), len(b))
    if not 2 <= m <= n // 2:
        raise ValueError(f"m: must be between 2 and half the smaller sample ({n // 2}), got {m}")
    if m > max_points:
        raise ValueError(f"m: {m} points need about {exact_memory_bytes(m, m) / 1e9:.1f} GB per solve "
                         f"(max_points={max_points})")
    repeats = repeats or min(MAX_AUTO_REPEATS, n // m)
    if repeats < 2 or repeats * m > n:
        raise ValueError(f"repeats: need 2 <= repeats <= {n // m} disjoint subsamples of size {m}, got {repeats}")
    rng = np.random.default_rng(seed)
    pa, pb = rng.permutation(len(a)), rng.permutation(len(b))
    values = [
        _exact_from_arrays(a[pa[i * m : (i + 1) * m]], b[pb[i * m : (i + 1) * m]]) for i in range(repeats)
    ]
    floor = _exact_from_arrays(a[pa[:m]], a[pa[m : 2 * m]]) if len(a) >= 2 * m else float("nan")
    mean = float(np.mean(values))
    margin = scipy.stats.t.ppf(confidence, repeats - 1) * float(np.std(values, ddof=1)) / math.sqrt(repeats)
    return mean + margin, mean, values, floor, m, repeats


def bracket(
    x,
    y,
    *,
    m: int | None = None,
    repeats: int | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    max_points: int = DEFAULT_MAX_POINTS,
    result=None,
    **estimate_kwargs,
) -> Bracket:
    """Interval that contains W1(P, Q) with probability >= ``confidence``.

    Parameters
    ----------
    x, y : as for :func:`wdist.estimate_w1`.
    m : int, optional
        Subsample size of each exact solve; default by :func:`choose_subsample_size`.
    repeats : int, optional
        Disjoint subsamples per side (>= 2); default as many as fit, at most 10.
    confidence : float
        Joint level; each one-sided bound is at ``(1 + confidence) / 2``.
    result : W1Result, optional
        An existing estimate of the same x, y to reuse for the lower side;
        otherwise :func:`wdist.estimate_w1` is run with ``estimate_kwargs``.

    Returns
    -------
    Bracket
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if result is None:
        from .estimator import estimate_w1

        result = estimate_w1(x, y, confidence=confidence, seed=seed, **estimate_kwargs)
    side = (1 + confidence) / 2  # union bound over the two sides
    lower = result.value - NormalDist().inv_cdf(side) * result.std_error
    upper, mean, values, floor, m, repeats = upper_bound(
        x, y, m=m, repeats=repeats, confidence=side, seed=seed, max_points=max_points)
    consistent = bool(lower <= upper)
    if not consistent:
        warnings.warn(
            f"bracket: lower bound {lower:.6g} exceeds upper bound {upper:.6g}: the Lipschitz "
            f"certificate is broken or the samples are too few for this confidence",
            RuntimeWarning, stacklevel=2)
    return Bracket(lower=lower, upper=upper, width=upper - lower, m=m, repeats=repeats,
                   upper_mean=mean, upper_values=values, noise_floor=floor,
                   critic_value=result.value, confidence=confidence, consistent=consistent)
