"""Diagnostics that combine the estimator with exact solves.

:func:`crosscheck`
    Train the critic on *all* samples and compare its gap with the exact
    sample W1: on the same samples no 1-Lipschitz critic can exceed it
    (Kantorovich-Rubinstein), so this tests the critic's tightness (``ratio``)
    and its certificate (``sound``).

:func:`bracket`
    Bracket the population W1 from both sides.  Lower: for the certified
    critic g, the test-split gap estimates ``E_P g - E_Q g <= W1(P, Q)``
    without bias, so ``gap - z * se`` is below W1 with the CLT's probability.
    Upper: :func:`wdist.exact.upper_bound` (Jensen on the jointly convex W1).
    ``confidence`` is the level of the *bracket*: each side is computed at
    ``(1 + confidence) / 2``, so by the union bound both hold together with
    probability >= ``confidence``.  ``lower > upper`` can only happen through
    a broken certificate or too few samples; it is reported loudly
    (``consistent=False`` and a warning), never hidden.
"""

from __future__ import annotations

import warnings

import numpy as np

from .data import paired_samples
from .estimator import estimate_w1
from .exact import DEFAULT_MAX_POINTS, check_size, exact_w1_arrays, noise_floor, upper_bound
from .results import Bracket, CrossCheck, bracket_side_level

__all__ = ["crosscheck", "bracket", "SOUNDNESS_RTOL"]

SOUNDNESS_RTOL = 1e-5


def crosscheck(
    x,
    y,
    *,
    critic="auto",
    steps: int | None = None,
    seed: int = 0,
    max_points: int = DEFAULT_MAX_POINTS,
    force: bool = False,
    progress: bool = True,
    **estimate_kwargs,
) -> CrossCheck:
    """Train the critic on *all* samples and compare its gap with the exact W1.

    Parameters
    ----------
    x, y : as for :func:`wdist.estimate_w1`
        Read once into memory; float32 and float64 inputs keep their dtype
        (the exact solve is on the float64 values, the critic on float32).
    critic, steps, seed, progress, estimate_kwargs :
        Passed to :func:`wdist.estimate_w1` with ``holdout=0``.
    max_points, force :
        Size rule of the exact solves (:func:`wdist.exact.check_size`).

    Returns
    -------
    CrossCheck
        ``critic <= exact`` up to ``SOUNDNESS_RTOL`` when the certificate is sound.
    """
    xs, ys = paired_samples(x, y, dtype=None)
    check_size(len(xs), len(ys), max_points, force)
    xt, yt = xs.tensor(), ys.tensor()  # read once (image folders: every file decoded once)
    a = xt.reshape(len(xt), -1).double().numpy()
    exact = exact_w1_arrays(a, yt.reshape(len(yt), -1).double().numpy())
    if len(a) < 4:
        raise ValueError(f"x: need at least 4 samples for a noise floor, got {len(a)}")
    half = len(a) // 2
    check_size(half, half, max_points, force)
    floor = noise_floor(a, half, np.random.default_rng(seed).permutation(len(a)))
    res = estimate_w1(xt, yt, critic=critic, steps=steps, holdout=0.0, seed=seed, progress=progress,
                      **estimate_kwargs)
    value = res.value
    sound = value <= exact * (1 + SOUNDNESS_RTOL) + 1e-12
    if not sound:
        warnings.warn(
            f"crosscheck: critic gap {value:.8g} exceeds the exact W1 {exact:.8g}: the Lipschitz "
            f"certificate is broken; please report this as a bug", RuntimeWarning, stacklevel=2)
    return CrossCheck(
        exact=exact, critic=value, ratio=value / exact if exact > 0 else float("nan"),
        noise_floor=floor, lipschitz=res.lipschitz, sound=sound, n_x=len(xs), n_y=len(ys),
        critic_name=res.settings.critic,
    )


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
        Subsample size of each exact solve; default by
        :func:`wdist.exact.choose_subsample_size`.
    repeats : int, optional
        Disjoint subsamples per side (>= 2); default as many as fit, at most 10.
    confidence : float
        Joint level; each one-sided bound is at ``(1 + confidence) / 2``.
    result : W1Result, optional
        An existing estimate of the same x, y to reuse for the lower side
        (anything with ``value`` and ``std_error``); otherwise
        :func:`wdist.estimate_w1` is run with ``estimate_kwargs``.

    Returns
    -------
    Bracket
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if result is None:
        result = estimate_w1(x, y, confidence=confidence, seed=seed, **estimate_kwargs)
    upper = upper_bound(x, y, m=m, repeats=repeats, confidence=bracket_side_level(confidence), seed=seed,
                        max_points=max_points)
    return Bracket.from_sides(result.value, result.std_error, upper, confidence)
