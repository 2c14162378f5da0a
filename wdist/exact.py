"""Exact sample W1 with POT, and the critic-vs-exact cross-check.

The exact sample W1 of two empirical measures is the optimal-transport cost
with Euclidean ground cost.  We solve it with POT's network simplex
(``ot.emd2``) in float64, with costs from SciPy's ``cdist`` (it subtracts
before squaring; the ``|x|^2 + |y|^2 - 2 x.y`` expansion loses the digits of
near-duplicate images), an iteration budget that scales with n (POT's default
stops early from n ~ 2000 and only warns, returning a cost that is too high),
and the solver's ``result_code`` checked.

In high dimension the exact *sample* W1 is biased upward (it converges like
n^(-1/d)): two samples of one distribution are far apart.  ``noise_floor``
is that bias, measured as the exact W1 between two halves of ``x``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import Samples, as_samples

__all__ = ["exact_w1", "crosscheck", "CrossCheck", "exact_memory_bytes", "DEFAULT_MAX_POINTS"]

BYTES_PER_PAIR = 39  # measured: cost matrix (8 B) + network simplex state, POT 0.9.7
DEFAULT_MAX_POINTS = 8000  # 8000 x 8000: ~2.5 GB, about a minute
SOUNDNESS_RTOL = 1e-5


def exact_memory_bytes(n: int, m: int) -> int:
    """Estimated peak memory of one exact solve between n and m points."""
    return int(BYTES_PER_PAIR * n * m)


def _as_matrix(samples: Samples) -> np.ndarray:
    if samples.in_memory:
        data = samples.data
    else:
        data = torch.cat(list(samples.batches(torch.arange(len(samples)), 256)))
    return data.reshape(len(data), -1).double().numpy()


def _exact_from_arrays(a: np.ndarray, b: np.ndarray) -> float:
    import ot
    from scipy.spatial.distance import cdist

    cost = cdist(a, b, metric="euclidean")
    wa = np.full(len(a), 1.0 / len(a))
    wb = np.full(len(b), 1.0 / len(b))
    iters = max(100_000, 500 * max(len(a), len(b)))
    value, log = ot.emd2(wa, wb, cost, numItermax=iters, log=True)
    if log.get("result_code") != 1:
        raise RuntimeError(
            f"exact_w1: POT emd2 did not reach the optimum (result_code={log.get('result_code')}, "
            f"{log.get('warning')}); the cost would be too high"
        )
    return float(value)


def _exact_samples(x, y) -> tuple[Samples, Samples]:
    xs, ys = as_samples(x, "x", dtype=torch.float64), as_samples(y, "y", dtype=torch.float64)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y: sample shapes differ: {xs.shape} vs {ys.shape}")
    return xs, ys


def _check_size(n: int, m: int, max_points: int, force: bool) -> None:
    if max(n, m) > max_points and not force:
        gb = exact_memory_bytes(n, m) / 1e9
        raise ValueError(
            f"exact_w1: {n} x {m} points need about {gb:.1f} GB and grow quadratically "
            f"(max_points={max_points}); subsample, raise max_points or pass force=True"
        )


def exact_w1(x, y, *, max_points: int = DEFAULT_MAX_POINTS, force: bool = False) -> float:
    """Exact W1 between the empirical measures of ``x`` and ``y`` (POT, float64).

    Parameters
    ----------
    x, y : Tensor, ndarray, Dataset or DataLoader
        Same inputs as :func:`wdist.estimate_w1`; samples are flattened.
    max_points : int
        Refuse larger problems (memory ~39 bytes per pair) unless ``force``.
    force : bool
        Solve anyway.

    Returns
    -------
    float
        ``min_pi sum_ij pi_ij ||x_i - y_j||_2`` over couplings of the uniform
        weights.

    Raises
    ------
    ValueError
        Bad input, or a problem above ``max_points`` (message states the memory).
    RuntimeError
        If the solver stops before the optimum.
    """
    xs, ys = _exact_samples(x, y)
    _check_size(len(xs), len(ys), max_points, force)
    return _exact_from_arrays(_as_matrix(xs), _as_matrix(ys))


def noise_floor(x, *, seed: int = 0, max_points: int = DEFAULT_MAX_POINTS, force: bool = False) -> float:
    """Exact W1 between two random halves of ``x``: the sampling bias of the exact value."""
    return _noise_floor_from_array(_as_matrix(as_samples(x, "x", dtype=torch.float64)), seed, max_points, force)


def _noise_floor_from_array(a: np.ndarray, seed: int, max_points: int, force: bool) -> float:
    if len(a) < 4:
        raise ValueError(f"x: need at least 4 samples for a noise floor, got {len(a)}")
    perm = np.random.default_rng(seed).permutation(len(a))
    half = len(a) // 2
    _check_size(half, half, max_points, force)
    return _exact_from_arrays(a[perm[:half]], a[perm[half : 2 * half]])


@dataclass
class CrossCheck:
    """Critic versus exact OT on the same samples.

    Attributes
    ----------
    exact : float
        Exact sample W1 (POT).
    critic : float
        In-sample gap of the trained critic divided by ``max(1, lipschitz)``;
        never above ``exact`` when the certificate is sound.
    ratio : float
        ``critic / exact``: tightness of the critic.
    noise_floor : float
        Exact W1 between two halves of x: how much of ``exact`` is sampling noise.
    lipschitz : float
        Certified Lipschitz bound of the critic.
    sound : bool
        ``critic <= exact * (1 + 1e-5)``; False means a broken certificate (a bug).
    """

    exact: float
    critic: float
    ratio: float
    noise_floor: float
    lipschitz: float
    sound: bool
    n_x: int
    n_y: int
    critic_name: str

    def to_dict(self) -> dict:
        return asdict(self)


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

    On the same samples the dual gap of a 1-Lipschitz critic can never exceed
    the exact W1 (Kantorovich-Rubinstein), so this checks both the tightness
    of the critic (``ratio``) and the soundness of its certificate.
    """
    from .estimator import estimate_w1

    xs, ys = _exact_samples(x, y)
    _check_size(len(xs), len(ys), max_points, force)
    a = _as_matrix(xs)  # read once: for image folders this decodes every file
    exact = _exact_from_arrays(a, _as_matrix(ys))
    floor = _noise_floor_from_array(a, seed, max_points, force)
    res = estimate_w1(xs.data if xs.in_memory else x, ys.data if ys.in_memory else y, critic=critic,
                      steps=steps, holdout=0.0, seed=seed, progress=progress, **estimate_kwargs)
    value = res.value
    sound = value <= exact * (1 + SOUNDNESS_RTOL) + 1e-12
    if not sound:
        warnings.warn(
            f"crosscheck: critic gap {value:.8g} exceeds the exact W1 {exact:.8g}: the Lipschitz "
            f"certificate is broken; please report this as a bug", RuntimeWarning, stacklevel=2)
    return CrossCheck(
        exact=exact, critic=value, ratio=value / exact if exact > 0 else float("nan"),
        noise_floor=floor, lipschitz=res.lipschitz, sound=sound, n_x=len(xs), n_y=len(ys),
        critic_name=res.settings["critic"],
    )
