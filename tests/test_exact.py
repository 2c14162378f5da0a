"""Exact W1 with POT against closed forms, its size rule and the subsample rule."""

import numpy as np
import pytest
import scipy.stats
import torch

import wdist
from wdist.exact import choose_subsample_size


def test_exact_w1_matches_the_one_dimensional_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.exponential(size=250)
    expected = scipy.stats.wasserstein_distance(a, b)  # quantile formula, exact in 1-D
    assert wdist.exact_w1(a[:, None], b[:, None]) == pytest.approx(expected, rel=1e-9)


def test_exact_w1_of_a_translation_is_the_shift_norm():
    x = torch.rand(400, 1, 6, 6, dtype=torch.float64)
    assert wdist.exact_w1(x, x + 0.05) == pytest.approx(0.05 * 6, rel=1e-9)


def test_exact_w1_refuses_problems_too_large_for_memory():
    x = np.zeros((9000, 2))
    with pytest.raises(ValueError, match=r"9000 x 9000 points need about 3\.2 GB"):
        wdist.exact_w1(x, x)


def test_automatic_subsample_rule():
    assert choose_subsample_size(20_000, 30_000) == (4000, 5)
    assert choose_subsample_size(1000, 900) == (225, 4)
    assert choose_subsample_size(100, 100, max_points=20) == (20, 5)
    with pytest.raises(ValueError, match="at least 8"):
        choose_subsample_size(7, 100)
