"""Pairs of distributions whose W1 is known exactly: the yardstick of tightness.

A certified critic's gap is a lower bound of W1; how far below is only
measurable where W1 is known.  The constructions here give W1 (and an optimal
potential) exactly, in any dimension, for vectors and for images.

Ray-monotone transport (Korotin, Kolesov & Burnaev, NeurIPS 2022)
-----------------------------------------------------------------
Let ``u`` be 1-Lipschitz and move each ``y ~ P`` to a point ``x`` on a segment
along which ``u`` decreases at unit rate (a transport ray of ``u``).  Then
``u(y) - u(x) = ||y - x||`` for every pair, and for *any* coupling ``pi`` of
the two laws ``E_pi ||y - x|| >= E u(y) - E u(x)`` (``u`` is 1-Lipschitz), with
equality for this one: it is optimal and

.. math::  W_1(P, Q) = \\mathbb E \\|y - T(y)\\| = \\mathbb E_P u - \\mathbb E_Q u .

:class:`FunnelPair` uses the "min-funnel" potential
``u(z) = min_j (||z - c_j|| + b_j)`` (N cones with apices ``c_j``): the active
cone of ``y`` is ``j* = argmin_j``, its ray leaves ``c = c_{j*}`` through
``y`` and is followed until the wall of the cube ``[-h, h]^D`` or until
another cone takes over; with ``w`` that end point and
``t = ||y - c|| / ||w - c||``, the image is ``x = c + t^deg (w - c)``.
Between ``c`` and ``y`` the same cone stays active (a min of cones), so the
identity above holds pair by pair (tested to 1e-12).

:class:`LatticePair` uses the distance to a lattice of parallel flats,
``u(z) = ||r(z)||`` with ``r`` the offset of ``z``'s coordinates in a random
K-dimensional subspace from the nearest point of ``p Z^K + phi``: each ``y``
moves toward its nearest flat along ``r``, ``t^deg`` of the way from the cell's
wall.  Its optimal potential is made of wedges (``K = 1``: a zigzag ridge in one
direction), not of cones about points, so a benchmark that holds both is not
won by fitting the funnels' form.  Both constructions share
:class:`RayMonotonePair` (samplers, truth).

The truth is a Monte-Carlo mean of ``||y - T(y)||`` with its standard error
(:meth:`FunnelPair.truth`); for a finite base population (the digits) it is
the exact mean over it.

Samplers
--------
Every pair hands out *samplers*: callables ``sampler(n) -> Tensor`` that draw
fresh samples (their own seeded generator), the input of
:func:`wdist.estimate_w1`'s sampler regime.  ``x`` is always drawn from
independent base samples (never the images of the ``y`` drawn beside it), so
the two sides are independent samples as the estimator assumes.

>>> pair = FunnelPair(dim=16, n_funnels=4, seed=0)
>>> y = pair.sample_base(1000, np.random.default_rng(1))
>>> x = pair.transport(y)
>>> bool(np.allclose(pair.potential(y) - pair.potential(x), np.linalg.norm(y - x, axis=1)))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.spatial.distance import cdist

__all__ = [
    "FunnelPair", "Sampler", "uniform_cube", "photo_patches", "digit_images", "translation_samplers",
    "korotin_pair", "image_funnel_pair", "LatticePair", "lattice_pair", "RayMonotonePair",
]

#: A base distribution: ``(n, rng) -> float64 array (n, D)``.
BaseSampler = Callable[[int, np.random.Generator], np.ndarray]
Sampler = Callable[[int], torch.Tensor]


# --------------------------------------------------------------- base laws
def uniform_cube(dim: int, half_width: float = 2.5) -> BaseSampler:
    """Uniform on ``[-half_width, half_width]^dim`` (Korotin et al.'s P)."""
    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-half_width, half_width, size=(n, dim))
    return sample


def _load_photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images  # ships two JPEGs, no download

    data = load_sample_images()
    return [img for _, img in sorted(zip((Path(f).name for f in data.filenames), data.images))]


def photo_patches(size: int = 16) -> BaseSampler:
    """Random ``3 x size x size`` crops of scikit-learn's two sample photos, in [-1, 1].

    Crops are drawn uniformly over both photos' crop positions (about 500,000
    distinct ones at 16 x 16), flattened in (C, H, W) order.
    """
    photos = _load_photos()
    views = [np.lib.stride_tricks.sliding_window_view(p, (size, size), axis=(0, 1)) for p in photos]

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        which = rng.integers(0, len(views), n)
        out = np.empty((n, 3 * size * size))
        for k, view in enumerate(views):
            idx = np.flatnonzero(which == k)
            rows = rng.integers(0, view.shape[0], len(idx))
            cols = rng.integers(0, view.shape[1], len(idx))
            out[idx] = view[rows, cols].reshape(len(idx), -1)  # view items are (3, size, size)
        return out / 127.5 - 1.0
    return sample


def digit_images() -> BaseSampler:
    """scikit-learn's 1797 handwritten digits (8 x 8, values 0-16) in [-1, 1], drawn with replacement."""
    from sklearn.datasets import load_digits

    images = load_digits().data / 8.0 - 1.0

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return images[rng.integers(0, len(images), n)]
    sample.population = images  # a finite law: its truth is an exact mean
    return sample


# ------------------------------------------------------------ the transport
class RayMonotonePair:
    """A pair ``(Q = T#P, P)`` with ``T`` ray-monotone for a known 1-Lipschitz potential.

    The base class owns what every construction shares: the samplers, the
    truth and the tensor layout.  A subclass sets :attr:`dim`, :attr:`shape`
    and :attr:`base` (``(n, rng) -> (n, D)`` samples of P) and gives the
    potential ``u`` and the map ``T`` in numpy and in torch, such that
    ``u(y) - u(T(y)) = ||y - T(y)||`` for every ``y`` (so W1 = E||y - T(y)||).
    """

    dim: int
    shape: tuple[int, ...]
    base: BaseSampler

    def potential(self, z: np.ndarray) -> np.ndarray:
        """The optimal potential ``u`` at the rows of ``z`` (float64)."""
        raise NotImplementedError

    def transport(self, y: np.ndarray) -> np.ndarray:
        """``T(y)`` for the rows of ``y`` (float64)."""
        raise NotImplementedError

    def transport_torch(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`transport` in torch, float64, on ``y``'s device."""
        raise NotImplementedError

    # -- samples and truth -----------------------------------------------------
    def sample_base(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of P (float64, flattened)."""
        return self.base(n, rng)

    def samplers(self, seed: int = 0, device: str | torch.device | None = None) -> tuple[Sampler, Sampler]:
        """(x sampler of Q = T#P, y sampler of P), independent, float32 tensors of :attr:`shape`.

        ``device`` (e.g. ``"cuda"``): the draws come on that device, transported there in
        float64 (:meth:`transport_torch`), as a generative model on a GPU would hand them
        out.  The base draws are the same numpy streams either way, so a seed gives the
        same samples up to rounding on any device.
        """
        rx, ry = (np.random.default_rng([seed, side]) for side in (0, 1))
        if device is None:
            return (lambda n: self._tensor(self.transport(self.sample_base(n, rx))),
                    lambda n: self._tensor(self.sample_base(n, ry)))

        def on_device(n: int, rng: np.random.Generator) -> torch.Tensor:
            return torch.from_numpy(self.sample_base(n, rng)).to(device)

        return (lambda n: self._tensor(self.transport_torch(on_device(n, rx))),
                lambda n: self._tensor(on_device(n, ry)))

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` independent samples per side: (x ~ Q, y ~ P)."""
        sx, sy = self.samplers(seed)
        return sx(n), sy(n)

    def truth(self, n_mc: int = 200_000, seed: int = 12345) -> tuple[float, float]:
        """(W1, standard error): the mean of ``||y - T(y)||`` over ``n_mc`` draws of P,
        or over the whole population of a finite base (standard error 0)."""
        population = getattr(self.base, "population", None)
        y = population if population is not None else self.sample_base(n_mc, np.random.default_rng(seed))
        dist = np.linalg.norm(y - self.transport(y), axis=1)
        se = 0.0 if population is not None else float(dist.std(ddof=1) / np.sqrt(len(dist)))
        return float(dist.mean()), se

    def _tensor(self, a: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 samples of :attr:`shape`, where ``a`` is (numpy rows: the CPU)."""
        return torch.as_tensor(a).float().reshape(len(a), *self.shape)


@dataclass
class FunnelPair(RayMonotonePair):
    """P = ``base``; Q = P moved along the rays of a min-funnel potential (module docstring).

    Parameters
    ----------
    dim : int
        Dimension D of the flattened samples.
    n_funnels : int
        N, the number of cones of ``u``.
    deg : float
        Contraction exponent: ``x = c + t^deg (w - c)``; larger moves further.
    half_width : float
        The cube ``[-h, h]^D`` that ends the rays; must contain the base's support.
    base : callable, optional
        ``(n, rng) -> (n, D)`` samples of P; default uniform on the cube.
    centre_width : float, optional
        Apices uniform on ``[-centre_width, centre_width]^D`` (default ``half_width``).
    offset_scale : float
        Offsets ``b_j = offset_scale * N(0, 1)``.
    seed : int
        Draws the apices and offsets.
    shape : tuple, optional
        Shape of one sample handed to the estimator (default ``(dim,)``; images
        ``(C, H, W)``).
    """

    dim: int
    n_funnels: int
    deg: float = 8.0
    half_width: float = 2.5
    base: BaseSampler | None = None
    centre_width: float | None = None
    offset_scale: float = 0.1
    seed: int = 0
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_funnels < 1 or self.deg <= 0 or self.half_width <= 0:
            raise ValueError("FunnelPair: dim, n_funnels, deg and half_width must be positive")
        rng = np.random.default_rng([self.seed, 2022])  # a stream no sampler seed reuses
        width = self.half_width if self.centre_width is None else self.centre_width
        self.centres = width * (2 * rng.uniform(size=(self.n_funnels, self.dim)) - 1)
        self.offsets = self.offset_scale * rng.standard_normal(self.n_funnels)
        self.base = self.base or uniform_cube(self.dim, self.half_width)
        self.shape = tuple(self.shape or (self.dim,))

    # -- the potential and its rays ------------------------------------------
    def _cone_values(self, z: np.ndarray) -> np.ndarray:
        # SciPy subtracts before squaring: exact differences, no |z|^2 + |c|^2 - 2zc expansion.
        return cdist(z, self.centres) + self.offsets

    def potential(self, z: np.ndarray) -> np.ndarray:
        """``u(z) = min_j (||z - c_j|| + b_j)`` for rows of ``z`` (float64)."""
        return np.concatenate([self._cone_values(chunk).min(axis=1) for chunk in _chunks(z)])

    def _ray_end(self, y: np.ndarray, cones: np.ndarray, active: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Distance r along ``y + r v`` to the cube wall or to the first cone that takes over."""
        h = self.half_width
        with np.errstate(divide="ignore", invalid="ignore"):
            wall = np.where(v != 0, (np.sign(v) * h - y) / v, np.inf).min(axis=1)
            u = cones[np.arange(len(y)), active]
            e = u[:, None] - self.offsets[None, :]                    # (n, N)
            d_norm2 = (cones - self.offsets) ** 2                     # ||y - c_k||^2
            d_dot_v = (y * v).sum(1, keepdims=True) - v @ self.centres.T
            r = (d_norm2 - e**2) / (2 * (e - d_dot_v))
        ok = (r > 0) & (e + r > 0) & np.isfinite(r)
        ok[np.arange(len(y)), active] = False
        takeover = np.where(ok, r, np.inf).min(axis=1)
        return np.minimum(wall, takeover)

    def transport(self, y: np.ndarray) -> np.ndarray:
        """``T(y)``: each row moved toward its cone's apex, ``x = c + t^deg (w - c)``."""
        return np.concatenate([self._transport_chunk(chunk) for chunk in _chunks(np.asarray(y, np.float64))])

    def _transport_chunk(self, y: np.ndarray) -> np.ndarray:
        cones = self._cone_values(y)
        active = cones.argmin(axis=1)
        c = self.centres[active]
        radius = np.linalg.norm(y - c, axis=1, keepdims=True)
        v = (y - c) / np.where(radius > 0, radius, 1.0)
        with np.errstate(invalid="ignore"):
            end = radius + self._ray_end(y, cones, active, v)[:, None]   # ||w - c||
        t = radius / end
        return c + np.where(radius > 0, t**self.deg * end, 0.0) * v  # y on an apex stays there

    def transport_torch(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`transport` in torch (float64, on ``y``'s device): the same formulas, so a
        sampler can move its draws on a GPU, where the numpy transport would cost more than
        the critic's step (D=128, 256 funnels: 47 ms a draw of 2 x 2,048 on two CPU cores)."""
        y = y.double()
        centres = torch.as_tensor(self.centres, device=y.device)
        offsets = torch.as_tensor(self.offsets, device=y.device)
        return torch.cat([self._transport_chunk_torch(chunk, centres, offsets) for chunk in y.split(8192)])

    def _transport_chunk_torch(self, y: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        # Exact differences, as SciPy's cdist (the matrix-product form loses the 1e-12 identity).
        cones = torch.cdist(y, centres, compute_mode="donot_use_mm_for_euclid_dist") + offsets
        active = cones.argmin(dim=1)
        c = centres[active]
        radius = (y - c).norm(dim=1, keepdim=True)
        v = (y - c) / torch.where(radius > 0, radius, torch.ones_like(radius))
        h, rows = self.half_width, torch.arange(len(y), device=y.device)
        inf = torch.tensor(torch.inf, dtype=y.dtype, device=y.device)
        wall = torch.where(v != 0, (torch.sign(v) * h - y) / v, inf).amin(dim=1)
        e = cones[rows, active][:, None] - offsets[None, :]                    # (n, N)
        d_norm2 = (cones - offsets) ** 2                                        # ||y - c_k||^2
        d_dot_v = (y * v).sum(1, keepdim=True) - v @ centres.T
        r = (d_norm2 - e**2) / (2 * (e - d_dot_v))
        ok = (r > 0) & (e + r > 0) & torch.isfinite(r)
        ok[rows, active] = False
        takeover = torch.where(ok, r, inf).amin(dim=1)
        end = radius + torch.minimum(wall, takeover)[:, None]                  # ||w - c||
        t = radius / end
        return c + torch.where(radius > 0, t**self.deg * end, torch.zeros_like(end)) * v


@dataclass
class LatticePair(RayMonotonePair):
    """P = ``base``; Q = P moved toward a lattice of parallel flats (no apex, no cone).

    The potential is the distance to a union of parallel ``(D - K)``-flats,
    ``u(z) = ||r(z)||`` with ``r(z) = A z - phi - p round((A z - phi) / p)``:
    ``A`` (K x D) has orthonormal rows drawn at random, so ``A z`` are the
    coordinates of ``z`` in a random K-dimensional subspace, and ``r`` is their
    offset from the nearest point of the lattice ``p Z^K + phi``.  ``u`` is
    constant along the other ``D - K`` directions and has ``|grad u| = 1``; its
    transport ray through ``y`` runs from the nearest flat through ``y`` to the
    wall of the lattice cell (where ``||r||_inf = p / 2`` and another flat
    takes over).  With ``t = 2 ||r(y)||_inf / p`` the position on that ray,
    ``T(y) = y - (1 - t^(deg - 1)) A^T r(y)`` moves ``y`` to ``t^deg`` of the
    way, as :class:`FunnelPair` does along its cones: ``u(y) - u(T(y)) =
    ||y - T(y)||`` pair by pair.  ``K = 1`` is a zigzag ridge, ``u = g(a . z)``
    with ``|g'| = 1`` changing sign every ``p / 2``: an optimal potential made of
    wedges in one direction, where the funnels' is made of cones about points.

    Parameters
    ----------
    dim : int
        Dimension D.
    rank : int
        K, the dimension of the subspace in which the lattice lives (1 <= K <= D).
    period : float
        p, the lattice's spacing along each of the K directions.
    deg : float
        Contraction exponent (> 1), as :class:`FunnelPair`'s.
    half_width : float
        P's default base: uniform on ``[-h, h]^D``.
    base : callable, optional
        ``(n, rng) -> (n, D)`` samples of P (the lattice is infinite: any support).
    seed : int
        Draws ``A`` and the lattice's phase ``phi ~ U[0, p)^K``.

    Examples
    --------
    >>> pair = LatticePair(dim=16, rank=2, period=1.0, seed=0)
    >>> y = pair.sample_base(1000, np.random.default_rng(1))
    >>> x = pair.transport(y)
    >>> bool(np.allclose(pair.potential(y) - pair.potential(x), np.linalg.norm(y - x, axis=1)))
    True
    """

    dim: int
    rank: int = 1
    period: float = 2.0
    deg: float = 8.0
    half_width: float = 2.5
    base: BaseSampler | None = None
    seed: int = 0
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= self.dim or self.period <= 0 or self.deg <= 1 or self.half_width <= 0:
            raise ValueError("LatticePair: need 1 <= rank <= dim, period > 0, deg > 1 and half_width > 0")
        rng = np.random.default_rng([self.seed, 2026])  # a stream no sampler seed reuses
        q, _ = np.linalg.qr(rng.standard_normal((self.dim, self.rank)))
        self.directions = np.ascontiguousarray(q.T)            # (K, D), orthonormal rows
        self.phase = self.period * rng.uniform(size=self.rank)
        self.base = self.base or uniform_cube(self.dim, self.half_width)
        self.shape = tuple(self.shape or (self.dim,))

    def _offset(self, z: np.ndarray) -> np.ndarray:
        """``r(z)``: the subspace coordinates' offset from the nearest lattice point."""
        s = z @ self.directions.T - self.phase
        return s - self.period * np.round(s / self.period)

    def _offset_torch(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`_offset` in torch (float64), on ``z``'s device."""
        s = z @ torch.as_tensor(self.directions, device=z.device).T - torch.as_tensor(self.phase, device=z.device)
        return s - self.period * torch.round(s / self.period)

    def potential(self, z: np.ndarray) -> np.ndarray:
        """``u(z)``: the distance from ``z`` to the nearest flat (float64)."""
        return np.linalg.norm(self._offset(np.asarray(z, np.float64)), axis=1)

    def transport(self, y: np.ndarray) -> np.ndarray:
        """``T(y) = y - (1 - t^(deg - 1)) A^T r(y)``, ``t = 2 ||r(y)||_inf / p``."""
        y = np.asarray(y, np.float64)
        r = self._offset(y)
        t = 2 * np.abs(r).max(axis=1, keepdims=True) / self.period
        return y - ((1 - t ** (self.deg - 1)) * r) @ self.directions

    def transport_torch(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`transport` in torch (float64, on ``y``'s device)."""
        y = y.double()
        r = self._offset_torch(y)
        t = 2 * r.abs().amax(dim=1, keepdim=True) / self.period
        return y - ((1 - t ** (self.deg - 1)) * r) @ torch.as_tensor(self.directions, device=y.device)


def _chunks(a: np.ndarray, rows: int = 2048):
    for start in range(0, len(a), rows):
        yield a[start:start + rows]


# ------------------------------------------------------------ named pairs
def korotin_pair(dim: int, n_funnels: int, seed: int = 0) -> FunnelPair:
    """The high-dimensional pairs of Korotin et al. (2022): uniform cube of half-width
    2.5, apices in the cube, offsets 0.1 N(0, 1), deg 8."""
    return FunnelPair(dim, n_funnels, deg=8.0, half_width=2.5, seed=seed)


def image_funnel_pair(base: str = "patches16", n_funnels: int = 1, deg: float = 10.0,
                      seed: int = 0) -> FunnelPair:
    """The generator-free image pairs: real images in [-1, 1] as P, cube half-width 1.2,
    apices uniform-noise images in [-1, 1].

    ``base``: ``"patches16"`` / ``"patches32"`` (3 x 16 x 16 / 3 x 32 x 32 photo
    crops) or ``"digits"`` (1 x 8 x 8).
    """
    bases = {"patches16": (photo_patches, 16, 3), "patches32": (photo_patches, 32, 3), "digits": (None, 8, 1)}
    if base not in bases:
        raise ValueError(f"base: unknown image base {base!r}; choose from {', '.join(map(repr, bases))}")
    make, size, channels = bases[base]
    sampler = digit_images() if make is None else make(size)
    dim = channels * size * size
    return FunnelPair(dim, n_funnels, deg=deg, half_width=1.2, base=sampler, centre_width=1.0,
                      seed=seed, shape=(channels, size, size))


def lattice_pair(dim: int, rank: int, period: float = 2.0, seed: int = 0) -> LatticePair:
    """Korotin et al.'s base (uniform cube of half-width 2.5, deg 8) moved toward a lattice
    of parallel flats instead of apices, spaced ``period`` apart in a random
    ``rank``-dimensional subspace.  The base's coordinates there have a standard deviation
    of 1.44: a spacing of 8 leaves about one cell (one flat, a wedge about it), a spacing of
    2 about three cells a direction, where the two laws differ only at that fine scale."""
    return LatticePair(dim, rank, period=period, deg=8.0, half_width=2.5, seed=seed)


def translation_samplers(shape: tuple[int, ...], shift_norm: float = 1.0,
                         seed: int = 0) -> tuple[Sampler, Sampler, float]:
    """(x sampler, y sampler, W1): ``y = z + s`` with z standard normal and ``||s|| = shift_norm``.

    A translation moves every point by ``s``: W1 = ``||s||`` exactly, and the
    optimal potential is linear (the easy control).
    """
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randn(shape, generator=gen, dtype=torch.float64)
    shift = (shift * shift_norm / shift.norm()).float()
    gx, gy = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)
    return (lambda n: torch.randn((n, *shape), generator=gx),
            lambda n: torch.randn((n, *shape), generator=gy) + shift, float(shift_norm))
