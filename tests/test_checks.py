"""wdist.checks: the crosscheck (critic vs exact on the same samples) and the bracket
(certified lower side, exact-OT upper side), against known W1."""

import types

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

import wdist

from helpers import _shifted_gaussians


def _translation(n: int, d: int, norm: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    c = torch.zeros(d)
    c[0] = norm
    return torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen) + c


# Two 1-D Gaussian mixtures: W1 = int |F_P - F_Q| dx, exact by quadrature.
P_MIX = ([0.5, 0.5], [-2.0, 2.0], [1.0, 1.0])
Q_MIX = ([0.3, 0.7], [-1.0, 2.5], [0.5, 1.0])


def _mixture_cdf(t, mix):
    w, mu, sd = mix
    return sum(wi * scipy.stats.norm.cdf(t, mi, si) for wi, mi, si in zip(w, mu, sd))


def _mixture_sample(n, mix, rng):
    w, mu, sd = mix
    k = rng.choice(len(w), size=n, p=w)
    return (np.asarray(mu)[k] + np.asarray(sd)[k] * rng.standard_normal(n))[:, None]


MIXTURE_W1 = scipy.integrate.quad(lambda t: abs(_mixture_cdf(t, P_MIX) - _mixture_cdf(t, Q_MIX)),
                                  -15, 15, limit=200)[0]


def test_bracket_contains_a_known_translation_and_is_consistent():
    x, y = _translation(2000, 2, 0.7, seed=0)
    b = wdist.bracket(x, y, critic="linear", progress=False)
    assert b.consistent and b.lower <= 0.7 <= b.upper
    assert b.m == 500 and b.repeats == 4 and len(b.upper_values) == 4
    assert b.width == pytest.approx(b.upper - b.lower)
    assert b.upper >= b.upper_mean >= 0.7 - 0.1


def test_lower_above_upper_is_reported_loudly():
    x, y = _translation(400, 2, 0.5, seed=0)
    fake = types.SimpleNamespace(value=50.0, std_error=0.01)
    with pytest.warns(RuntimeWarning, match="certificate is broken"):
        b = wdist.bracket(x, y, result=fake)
    assert not b.consistent


def test_estimate_w1_bracket_block_is_opt_in():
    x, y = _translation(600, 2, 0.5, seed=1)
    plain = wdist.estimate_w1(x, y, critic="linear", steps=50, progress=False)
    assert plain.bracket is None
    res = wdist.estimate_w1(x, y, critic="linear", steps=50, progress=False, bracket=True)
    assert res.bracket["lower"] <= res.bracket["upper"]
    assert res.to_dict()["bracket"]["m"] == 150


def test_bracket_rejects_bad_subsample_sizes():
    x, y = _translation(100, 2, 0.5, seed=0)
    fake = types.SimpleNamespace(value=0.1, std_error=0.01)
    with pytest.raises(ValueError, match="m: must be between 2 and half"):
        wdist.bracket(x, y, m=80, result=fake)
    with pytest.raises(ValueError, match="repeats"):
        wdist.bracket(x, y, m=40, repeats=3, result=fake)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["translation", "mixture"])
def test_bracket_coverage_over_20_seeds(case):
    """The bracket contains the true W1 in >= 95% of 20 independent runs."""
    hits, widths = 0, []
    for seed in range(20):
        if case == "translation":
            x, y = _translation(1000, 2, 0.7, seed=100 + seed)
            truth, kwargs = 0.7, dict(critic="linear")
        else:
            rng = np.random.default_rng(200 + seed)
            x, y = _mixture_sample(1000, P_MIX, rng), _mixture_sample(1000, Q_MIX, rng)
            truth, kwargs = MIXTURE_W1, dict(critic="mlp", steps=150, eval_every=50)
        b = wdist.bracket(x, y, seed=seed, progress=False, **kwargs)
        assert b.consistent
        hits += b.lower <= truth <= b.upper
        widths.append(b.width)
    assert hits >= 19, f"{hits}/20 brackets contain W1 = {truth:.4f}"
    assert np.mean(widths) < 2 * truth  # informative, not vacuous


@pytest.mark.slow
def test_bracket_width_shrinks_with_n():
    def mean_width(n):
        return np.mean([wdist.bracket(*_translation(n, 2, 0.7, seed=s), critic="linear", seed=s,
                                      progress=False).width for s in range(3)])

    small, large = mean_width(400), mean_width(4000)
    assert large < 0.6 * small


def test_crosscheck_small_case_is_sound():
    x, y = _shifted_gaussians(300, 2, shift=1.0)
    res = wdist.crosscheck(x, y, critic="mlp", steps=300, progress=False)
    assert res.sound and res.critic <= res.exact * (1 + 1e-5)
    assert 0.8 < res.ratio <= 1 + 1e-5
    assert res.noise_floor > 0


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.as_tensor(digits.target)


@pytest.mark.slow
def test_crosscheck_digits_translation_is_exact():
    """Same samples shifted by 0.05 per pixel: sample W1 = 0.05 * 8 = 0.4 exactly."""
    images, _ = _digits()
    res = wdist.crosscheck(images, images + 0.05, steps=600, progress=False)
    assert res.exact == pytest.approx(0.4, rel=0.01)
    assert res.critic == pytest.approx(0.4, rel=0.01)
    assert res.sound


@pytest.mark.slow
def test_crosscheck_digits_low_vs_high_is_tight_and_sound():
    images, labels = _digits()
    res = wdist.crosscheck(images[labels < 5], images[labels >= 5], steps=800, progress=False)
    assert res.sound, "critic gap above the exact W1: broken Lipschitz certificate"
    assert res.ratio >= 0.90
    assert res.noise_floor > 0


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 8])
def test_crosscheck_gaussian_mixtures_is_tight_and_sound(d):
    gen = torch.Generator().manual_seed(d)
    centers = 3 * torch.randn(4, d, generator=gen)
    x = centers[torch.randint(4, (600,), generator=gen)] + 0.5 * torch.randn(600, d, generator=gen)
    y = centers[torch.randint(4, (600,), generator=gen)].flip(1) + 0.5 * torch.randn(600, d, generator=gen)
    res = wdist.crosscheck(x, y, steps=800, progress=False)
    assert res.sound
    assert res.ratio >= 0.97
    neural = wdist.crosscheck(x, y, critic="mlp", steps=400, progress=False)
    assert neural.sound and neural.ratio > 0.5
