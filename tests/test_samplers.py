"""Sampler inputs (fresh draws) and K-fold cross-fitting in estimate_w1."""

import math

import pytest
import torch
from torch.utils.data import IterableDataset

import wdist
from wdist.datasets import translation_samplers
from wdist.data import split_indices
from wdist.estimator import (CLOSED_FORM_DRAWS, DEFAULT_SAMPLER_TEST_DRAWS, DEFAULT_SAMPLER_VALIDATION_DRAWS,
                             TEST_DRAW_CHUNK)


class Recorder:
    """A sampler that keeps every draw, to check which samples were used where."""

    def __init__(self, sampler):
        self.sampler, self.draws = sampler, []

    def __call__(self, n):
        out = self.sampler(n)
        self.draws.append(out.clone())
        return out


@pytest.mark.slow  # 18 s: out of test-fast's 3 minutes
def test_sampler_inputs_estimate_a_translation_with_fresh_test_samples():
    sx, sy, w1 = translation_samplers((8,), shift_norm=1.0, seed=0)
    rx, ry = Recorder(sx), Recorder(sy)
    res = wdist.estimate_w1(rx, ry, critic="mlp", steps=300, lr=1e-2, eval_every=100, batch_size=128,
                            test_size=3000, progress=False)
    assert res.lower <= w1 <= res.upper + 0.05
    assert res.value == pytest.approx(w1, rel=0.1)
    assert res.n_test == (3000, 3000) and res.settings["sampler"] == [True, True]
    assert res.n_train == (300 * 128, 300 * 128)  # fresh training draws of the start kept
    # shape probe (2), validation (3000), 300 fresh training batches for each of the two
    # starts (DEFAULT_RESTARTS_FRESH; no plateau within 300 steps), then the test draw
    assert res.settings["restarts"] == 2
    sizes = [len(d) for d in rx.draws]
    assert sizes == [2, 3000] + [128] * 600 + [3000]
    test = rx.draws[-1]
    seen = torch.cat(rx.draws[:-1])
    assert not (test[:, None, :] == seen[None]).all(-1).any()  # never seen in training or validation


def test_a_sampler_drawing_on_the_training_device_keeps_its_batches_there(device, monkeypatch):
    """A generative model on the GPU: its training batches go to the critic without a trip
    through host memory (validation and test draws still come to the CPU, where they are
    stored and scored in chunks)."""
    from wdist.samplers import SamplerSource, _same_device
    from wdist.training import CriticTrainer

    assert _same_device(torch.device("cuda", 1), torch.device("cuda", 1))
    assert not _same_device(torch.device("cpu"), torch.device("cuda", 0))
    sx, sy, w1 = translation_samplers((8,), shift_norm=1.0, seed=5)
    on_device = (lambda n: sx(n).double().to(device)), (lambda n: sy(n).double().to(device))
    source = SamplerSource(on_device[0], "x")
    assert source(4).device.type == "cpu" and source(4, device).device.type == device.type
    assert source(4, device).dtype == torch.float32
    seen = []
    step = CriticTrainer._step

    def spy(self, model, xb, yb, *args):
        seen.append({xb.device.type, yb.device.type})
        return step(self, model, xb, yb, *args)

    monkeypatch.setattr(CriticTrainer, "_step", spy)
    res = wdist.estimate_w1(*on_device, critic="mlp", steps=200, lr=1e-2, eval_every=100, batch_size=128,
                            test_size=2000, device=device, restarts=1, progress=False)
    assert len(seen) == 200 and all(types == {device.type} for types in seen)
    assert res.lower <= w1 and res.value == pytest.approx(w1, rel=0.25)


def test_a_numpy_sampler_draws_with_one_blas_thread_and_torch_keeps_its_threads():
    """An idle BLAS worker spins after a draw and takes the cores the critic's step needs
    (wdist.samplers.foreign_blas): numpy's BLAS runs a draw on one thread, and the limit
    ends with the draw, so neither numpy after it nor torch at any time runs under it."""
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    from wdist.samplers import SamplerSource, foreign_blas

    def numpy_blas_threads():
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
                if lib["user_api"] == "blas" and "numpy" in lib["filepath"]}

    assert numpy_blas_threads(), "numpy's wheel ships its own BLAS; threadpoolctl must find it"
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    assert not any(torch_dir in c.filepath for c in foreign_blas().lib_controllers)
    rng = np.random.default_rng(0)
    inside = []

    def sampler(n):
        inside.append((numpy_blas_threads(), torch.get_num_threads()))
        return rng.normal(size=(n, 4)) @ np.eye(4)

    torch_threads = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):
        source = SamplerSource(sampler, "x")
        before = numpy_blas_threads()
        assert set(before.values()) == {2}
        assert source(8).shape == (8, 4)
        assert set(inside[-1][0].values()) == {1} and inside[-1][1] == torch_threads
        assert numpy_blas_threads() == before and torch.get_num_threads() == torch_threads


def test_the_linear_critic_fits_fresh_draws_in_closed_form():
    sx, sy, w1 = translation_samplers((256,), shift_norm=1.5, seed=3)
    rx = Recorder(sx)
    res = wdist.estimate_w1(rx, sy, critic="linear", test_size=4000, progress=False)
    assert res.stopped == "closed_form" and res.n_train == (CLOSED_FORM_DRAWS, CLOSED_FORM_DRAWS)
    # 65,536 draws per side: the direction is within ~0.5% of the shift's, so the test gap is
    # the truth up to its own noise (se ~0.022 with 4,000 per side).
    assert res.lower <= w1 <= res.upper
    assert sum(len(d) for d in rx.draws[2:-1]) == CLOSED_FORM_DRAWS  # after the probe and validation
    # No test sample was drawn before: rows sharing a first coordinate (float32 draws do,
    # by chance) are compared whole.
    test, seen = rx.draws[-1], torch.cat(rx.draws[:-1])
    suspects = test[torch.isin(test[:, 0], seen[:, 0])]
    assert not any((seen[seen[:, 0] == row[0]] == row).all(1).any() for row in suspects)


def test_by_default_a_sampler_validates_on_10000_draws_and_tests_on_50000_drawn_in_chunks():
    sx, sy, w1 = translation_samplers((16,), shift_norm=1.0, seed=4)
    rx = Recorder(sx)
    res = wdist.estimate_w1(rx, sy, critic="linear", progress=False)
    validation = DEFAULT_SAMPLER_VALIDATION_DRAWS
    assert res.n_validation == (validation, validation) == (10_000, 10_000)
    assert res.n_test == (DEFAULT_SAMPLER_TEST_DRAWS, DEFAULT_SAMPLER_TEST_DRAWS) == (50_000, 50_000)
    sizes = [len(d) for d in rx.draws]
    assert sizes[1] == validation  # after the shape probe
    assert sizes[-5:] == [TEST_DRAW_CHUNK] * 5 and sum(sizes) == 2 + 10_000 + CLOSED_FORM_DRAWS + 50_000
    # The linear critic's values are unit-variance Gaussians on each side, so the interval's
    # half-width is z * sqrt(2 / 50,000) = 0.0124 (0.0277 with 10,000 test draws).
    assert (res.upper - res.lower) / 2 == pytest.approx(1.96 * math.sqrt(2 / 50_000), rel=0.05)
    assert res.lower <= w1 <= res.upper


def test_an_iterable_dataset_is_a_sampler():
    sx, sy, w1 = translation_samplers((4,), shift_norm=2.0, seed=1)

    class Stream(IterableDataset):
        def __iter__(self):
            while True:
                yield from sy(64)

    res = wdist.estimate_w1(sx, Stream(), critic="linear", steps=200, lr=1e-2, test_size=2000, progress=False)
    assert res.value == pytest.approx(w1, rel=0.1)


def test_finite_and_sampler_sides_mix():
    sx, sy, w1 = translation_samplers((4,), shift_norm=2.0, seed=2)
    res = wdist.estimate_w1(sx(4000), sy, critic="linear", steps=200, lr=1e-2, test_size=2000, progress=False)
    # The finite side tests its holdout (0.3 of 4,000), the sampler side test_size fresh draws.
    assert res.n_test == (1200, 2000) and res.value == pytest.approx(w1, rel=0.1)


@pytest.mark.parametrize("side, bad, message", [
    ("x", lambda n: torch.zeros(n + 1, 4), "x: the sampler was asked for 2 samples and returned shape"),
    ("y", lambda n: torch.full((n, 4), float("nan")), "y: the sampler returned NaN or Inf"),
    ("x", lambda n: [[0.0] * 4] * n, "x: the sampler returned list"),
    ("y", lambda n: torch.zeros(n, 5), "x and y: sample shapes differ"),
])
def test_bad_sampler_output_is_a_value_error_naming_the_side(side, bad, message):
    good = lambda n: torch.zeros(n, 4)  # noqa: E731
    x, y = (bad, good) if side == "x" else (good, bad)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        wdist.estimate_w1(x, y, steps=1, progress=False)


def test_a_sampler_that_breaks_later_is_named():
    calls = []

    def flaky(n):
        calls.append(n)
        return torch.zeros(n, 4) if len(calls) < 3 else torch.zeros(n, 3)

    with pytest.raises(ValueError, match="x: the sampler returned samples of shape"):
        wdist.estimate_w1(flaky, lambda n: torch.ones(n, 4), critic="linear", steps=5, progress=False)


def test_an_iterable_dataset_that_ends_is_named():
    class Short(IterableDataset):
        def __iter__(self):
            yield from torch.zeros(50, 4)

    with pytest.raises(ValueError, match="y: the IterableDataset ended after"):
        wdist.estimate_w1(lambda n: torch.zeros(n, 4), Short(), steps=5, progress=False)


def test_sampler_only_options_are_checked():
    x = torch.randn(100, 4)
    with pytest.raises(ValueError, match="test_size: applies to sampler inputs only"):
        wdist.estimate_w1(x, x + 1, test_size=10, progress=False)
    with pytest.raises(ValueError, match="checkpoint"):
        wdist.estimate_w1(lambda n: torch.zeros(n, 4), x, checkpoint="/tmp/nowhere", progress=False)
    with pytest.raises(ValueError, match="bracket: the exact upper side needs finite samples"):
        wdist.estimate_w1(x, lambda n: torch.zeros(n, 4), bracket=True, progress=False)


# ------------------------------------------------------------------ cross-fitting
def test_folds_partition_the_samples_and_never_test_what_they_train_on():
    folds = split_indices(103, 0.5, torch.Generator().manual_seed(0), "x", folds=5)
    tests = torch.cat([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(103))  # every sample tested exactly once
    for f in folds:
        test = set(f.test.tolist())
        assert not test & set(f.train.tolist()) and not test & set(f.val.tolist())
        assert len(f.train) + len(f.val) + len(f.test) == 103


def test_cross_fitting_tests_every_sample_and_gives_a_certified_mean_critic():
    sx, sy, w1 = translation_samplers((16,), shift_norm=1.5, seed=3)
    x, y = sx(1500), sy(1500)
    res = wdist.estimate_w1(x, y, critic="linear", folds=3, steps=300, lr=1e-2, progress=False)
    assert res.n_test == (1500, 1500) and res.settings["folds"] == 3
    assert res.lower <= w1 <= res.upper + 0.05
    assert wdist.lipschitz_bound(res.critic, (16,)) <= 1 + 1e-4
    # The mean critic is the one to apply to new data: its gap on fresh samples is a valid bound.
    with torch.no_grad():
        fresh_gap = float(res.critic(sx(20000)).mean() - res.critic(sy(20000)).mean())
    assert fresh_gap <= w1 + 0.02
    assert fresh_gap == pytest.approx(res.value, abs=4 * res.std_error + 0.02)


def test_cross_fitting_needs_held_out_folds():
    x = torch.randn(100, 4)
    with pytest.raises(ValueError, match="folds"):
        wdist.estimate_w1(x, x + 1, folds=0, progress=False)
    with pytest.raises(ValueError, match="folds: cross-fitting needs held-out folds"):
        wdist.estimate_w1(x, x + 1, folds=3, holdout=0.0, progress=False)


class _SeenRows(torch.nn.Module):
    """Identity that records the rows passed through it in training mode."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return x

    def lipschitz_bound(self, input_shape):
        return 1.0


def test_cross_fitted_user_critics_start_pristine_and_never_see_their_test_fold():
    sx, sy, _ = translation_samplers((4,), seed=4)
    x, y = sx(300), sy(300)
    critic = torch.nn.Sequential(_SeenRows(), wdist.nn.BjorckLinear(4, 1))
    res = wdist.estimate_w1(x, y, critic=critic, folds=3, steps=30, eval_every=10, progress=False)
    fold_critics = res.critic.critics
    seen = [torch.cat(c[0].seen) for c in fold_critics]
    for k, rows in enumerate(seen):
        # each fold's critic trained on the other folds' training splits only
        unseen = (~(x[:, None, :] == rows[None]).all(-1).any(1)).sum()
        # its 100 test rows and 40 validation rows (scored in eval mode); a copy of an
        # earlier fold's trained critic would have seen them
        assert int(unseen) == 140, f"fold {k} saw rows it tests on"
    assert not critic[0].seen  # the user's module itself stays untouched


def test_two_samplers_may_train_longer_than_finite_samples():
    """Fresh draws cannot be over-fitted: with two samplers a default run ends when its
    learning-rate drops converge (cap 10,000 steps), on finite samples at 4,000."""
    from wdist.estimator import DEFAULT_MAX_STEPS, DEFAULT_MAX_STEPS_FRESH, _train_config

    fresh = _train_config(None, None, None, None, 0, None)
    finite = _train_config(None, None, None, None, 0, 500)
    assert (fresh.max_steps, finite.max_steps) == (DEFAULT_MAX_STEPS_FRESH, DEFAULT_MAX_STEPS) == (10_000, 4000)
    assert fresh.lr_drops == 2 and finite.lr_drops == 0
    assert _train_config(300, None, None, None, 0, None).max_steps == 300  # given steps are exact
    assert _train_config(300, None, None, None, 0, 100_000).max_steps == 300


def test_two_samplers_train_on_large_batches_except_the_critics_that_cap_them():
    """2,048 a side with two samplers, min(256, training split) with finite samples; the
    convolutional and anchors critics cap the default (64 / 256), a given batch stands."""
    from wdist.critics import CRITICS
    from wdist.estimator import DEFAULT_BATCH_FRESH, _spec_config, _train_config

    fresh, finite = _train_config(None, None, None, None, 0, None), _train_config(None, None, None, None, 0, 100)
    assert (fresh.batch_size, finite.batch_size) == (DEFAULT_BATCH_FRESH, 100) and DEFAULT_BATCH_FRESH == 2048
    assert _train_config(None, None, None, None, 0, 5000).batch_size == 256
    batch = {name: _spec_config(fresh, CRITICS[name], frozenset()).batch_size for name in ("mlp", "bcop", "anchors")}
    assert batch == {"mlp": 2048, "bcop": 64, "anchors": 256}
    given = _train_config(None, 4096, None, None, 0, None)
    assert _spec_config(given, CRITICS["anchors"], frozenset({"batch_size"})).batch_size == 4096
    draw = lambda n: torch.randn(n, 4)  # noqa: E731
    res = wdist.estimate_w1(draw, draw, critic="mlp", steps=2, test_size=100, progress=False)
    assert res.settings.batch_size == 2048 and res.n_train == (4096, 4096)


def test_finite_cap_grows_with_the_training_split():
    """A large training split may train for longer (one step per four samples of the smaller
    side), between the 4,000-step default and MAX_STEPS_FINITE."""
    from wdist.estimator import MAX_STEPS_FINITE, _train_config

    caps = [_train_config(None, None, None, None, 0, n).max_steps for n in (16_000, 16_004, 32_000, 64_000, 10**6)]
    assert caps == [4000, 4001, 8000, 16_000, 16_000] and MAX_STEPS_FINITE == 16_000
