"""Known-truth pairs: the ray-monotone identity, and W1 against exact solvers."""

import numpy as np
import pytest
import scipy.stats
import torch

import wdist
from wdist.datasets import (FunnelPair, LatticePair, image_funnel_pair, korotin_pair, lattice_pair,
                            translation_samplers)


@pytest.mark.parametrize("dim, funnels", [(16, 4), (128, 4), (128, 64), (64, 256)])
def test_funnel_transport_moves_along_rays_of_the_potential(dim, funnels):
    pair = korotin_pair(dim, funnels, seed=3)
    y = pair.sample_base(2000, np.random.default_rng(0))
    x = pair.transport(y)
    # u(y) - u(x) = ||y - x|| pair by pair: the coupling is optimal and W1 = E||y - x||.
    gap = pair.potential(y) - pair.potential(x)
    np.testing.assert_allclose(gap, np.linalg.norm(y - x, axis=1), rtol=0, atol=1e-12)
    assert np.abs(x).max() <= pair.half_width  # the image stays in the cube
    assert (np.linalg.norm(y - x, axis=1) > 0).mean() > 0.99  # and actually moves


def test_image_funnel_pair_has_the_identity_and_image_shape():
    pair = image_funnel_pair("digits", n_funnels=16, deg=100.0)
    y = pair.sample_base(500, np.random.default_rng(1))
    x = pair.transport(y)
    np.testing.assert_allclose(pair.potential(y) - pair.potential(x), np.linalg.norm(y - x, axis=1),
                               rtol=0, atol=1e-12)
    assert y.min() >= -1 and y.max() <= 1
    sx, sy = pair.samplers(seed=0)
    assert sx(5).shape == (5, 1, 8, 8) and sy(5).dtype == torch.float32
    assert pair.truth()[1] == 0.0  # digits are a finite population: the truth is an exact mean


def test_funnel_truth_is_the_one_dimensional_w1():
    # In 1-D the quantile formula gives W1 exactly from samples: the construction's
    # E||y - T(y)|| must be the true W1 of the two laws, not only an upper bound.
    pair = FunnelPair(dim=1, n_funnels=3, deg=3.0, half_width=1.0, seed=2)
    truth, se = pair.truth(400_000)
    x, y = pair.sample(400_000, seed=5)
    empirical = scipy.stats.wasserstein_distance(x.double().numpy()[:, 0], y.double().numpy()[:, 0])
    assert abs(empirical - truth) < 4 * se + 0.004


def test_funnel_truth_matches_exact_ot_in_two_dimensions():
    pair = FunnelPair(dim=2, n_funnels=2, deg=4.0, half_width=1.0, seed=0)
    truth, _ = pair.truth(200_000)
    y = pair.sample_base(3000, np.random.default_rng(0))
    # On the same points with their own images the coupling y -> T(y) is optimal:
    # the exact sample W1 equals the mean transport cost.
    exact = wdist.exact_w1(pair.transport(y), y)
    assert exact == pytest.approx(np.linalg.norm(y - pair.transport(y), axis=1).mean(), rel=1e-9)
    assert exact == pytest.approx(truth, rel=0.05)


@pytest.mark.parametrize("pair", [korotin_pair(128, 64, seed=3), image_funnel_pair("digits", 16, 100.0)],
                         ids=["korotin-128-64", "digits-16"])
def test_torch_transport_is_the_numpy_transport_on_the_test_device(pair, device):
    """The samplers' device path (``samplers(device=...)``) moves draws with torch: the same
    map as the numpy one to rounding, so it keeps the ray identity to 1e-12."""
    y = pair.sample_base(3000, np.random.default_rng(0))
    x = pair.transport_torch(torch.from_numpy(y).to(device))
    assert x.device.type == device.type and x.dtype == torch.float64
    x = x.cpu().numpy()
    np.testing.assert_allclose(x, pair.transport(y), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pair.potential(y) - pair.potential(x), np.linalg.norm(y - x, axis=1),
                               rtol=0, atol=1e-12)
    sx, sy = pair.samplers(seed=2, device=device)
    nx, ny = pair.samplers(seed=2)
    a, b = sx(500), sy(500)
    assert a.device.type == device.type and a.dtype == torch.float32
    # the same numpy base streams: the same samples (and shape), up to float32 rounding of the transport
    torch.testing.assert_close(a.cpu(), nx(500), rtol=0, atol=1e-6)
    assert torch.equal(b.cpu(), ny(500))


def test_samplers_are_independent_reproducible_and_fresh():
    pair = korotin_pair(8, 4)
    sx, sy = pair.samplers(seed=1)
    a, b = sx(100), sx(100)
    assert not torch.equal(a, b)  # fresh draws
    sx2, _ = pair.samplers(seed=1)
    assert torch.equal(sx2(100), a)  # the same seed replays
    x, y = pair.sample(100, seed=1)
    assert torch.equal(x, a)
    # x is not the image of the y drawn beside it: the two sides are independent samples.
    assert not np.allclose(pair.transport(y.double().numpy()), x.double().numpy(), atol=1e-3)


def test_translation_samplers_have_the_shift_as_w1():
    sx, sy, w1 = translation_samplers((3, 4, 4), shift_norm=2.0, seed=0)
    x, y = sx(20000), sy(20000)
    assert x.shape == (20000, 3, 4, 4) and w1 == 2.0
    assert (y.mean(0) - x.mean(0)).norm() == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("dim, rank", [(128, 1), (128, 16), (64, 64), (3, 2)])
def test_lattice_transport_moves_along_rays_of_the_distance_to_the_flats(dim, rank, device):
    pair = lattice_pair(dim, rank, seed=3)
    np.testing.assert_allclose(pair.directions @ pair.directions.T, np.eye(rank), rtol=0, atol=1e-12)
    y = pair.sample_base(2000, np.random.default_rng(0))
    x = pair.transport(y)
    dist = np.linalg.norm(y - x, axis=1)
    np.testing.assert_allclose(pair.potential(y) - pair.potential(x), dist, rtol=0, atol=1e-12)
    assert (dist > 0).mean() > 0.99 and pair.potential(y).max() <= pair.period * np.sqrt(rank) / 2
    # every move lies in the lattice's subspace: the other D - K coordinates are P's own
    kept = (y - x) - (y - x) @ pair.directions.T @ pair.directions
    assert np.abs(kept).max() < 1e-12
    # the torch map (samplers on a device) is the same map
    xt = pair.transport_torch(torch.from_numpy(y).to(device))
    assert xt.device.type == device.type and xt.dtype == torch.float64
    np.testing.assert_allclose(xt.cpu().numpy(), x, rtol=0, atol=1e-12)


def test_lattice_truth_is_the_one_dimensional_w1():
    # D = K = 1: a zigzag potential with a sign change every p/2; the quantile formula
    # gives the exact W1 of the two laws, which must be the construction's E|y - T(y)|.
    pair = LatticePair(dim=1, rank=1, period=0.8, deg=3.0, half_width=1.0, seed=2)
    truth, se = pair.truth(400_000)
    x, y = pair.sample(400_000, seed=5)
    empirical = scipy.stats.wasserstein_distance(x.double().numpy()[:, 0], y.double().numpy()[:, 0])
    assert abs(empirical - truth) < 4 * se + 0.003


def test_lattice_truth_matches_exact_ot_in_two_dimensions():
    pair = LatticePair(dim=2, rank=2, period=0.9, deg=4.0, half_width=1.0, seed=0)
    truth, _ = pair.truth(200_000)
    y = pair.sample_base(3000, np.random.default_rng(0))
    x = pair.transport(y)
    exact = wdist.exact_w1(x, y)  # the map's own coupling is optimal on its own points
    assert exact == pytest.approx(np.linalg.norm(y - x, axis=1).mean(), rel=1e-9)
    assert exact == pytest.approx(truth, rel=0.05)


def test_bad_pair_arguments_are_named():
    with pytest.raises(ValueError, match="LatticePair"):
        LatticePair(dim=4, rank=5)
    with pytest.raises(ValueError, match="LatticePair"):
        LatticePair(dim=4, rank=1, deg=1.0)
    with pytest.raises(ValueError, match="base"):
        image_funnel_pair("cifar")
    with pytest.raises(ValueError, match="FunnelPair"):
        FunnelPair(dim=0, n_funnels=2)
