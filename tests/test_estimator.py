"""estimate_w1 against closed forms; its results and its bad-input errors."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wdist
import wdist.data
import wdist.datasets

from helpers import _shifted_gaussians


# --------------------------------------------------------------------------- estimator


def test_translation_estimate_with_the_linear_critic(device):
    x, y = _shifted_gaussians(4000, 8, shift=1.0)
    res = wdist.estimate_w1(x, y, critic="linear", progress=False, device=device)
    assert res.value == pytest.approx(1.0, abs=0.06)
    assert res.lower <= 1.0
    assert res.lipschitz <= 1 + 1e-4
    assert res.lower < res.value < res.upper
    # The interval is the CLT interval of the independent test values.
    assert res.upper - res.value == pytest.approx(1.959964 * res.std_error, rel=1e-5)


def test_the_linear_critic_is_the_exact_maximiser_of_its_training_gap():
    gen = torch.Generator().manual_seed(4)
    mean_x, mean_y = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)
    critic = wdist.critics.linear_critic((16,))
    wdist.critics.fit_linear_critic(critic, mean_x, mean_y)
    with torch.no_grad():
        gap = float(critic(mean_x.float()[None]) - critic(mean_y.float()[None]))
        others = torch.nn.functional.normalize(torch.randn(1000, 16, generator=gen, dtype=torch.float64), dim=1)
    assert gap == pytest.approx(float((mean_x - mean_y).norm()), rel=1e-5)  # Cauchy-Schwarz: the maximum
    assert gap >= float((others @ (mean_x - mean_y)).max())
    assert wdist.lipschitz_bound(critic, (16,)) <= 1 + 1e-4


@pytest.mark.parametrize("shape", [(16,), (3, 4, 4)])
def test_the_ridge_critic_is_a_certified_function_of_one_unit_direction(shape):
    torch.manual_seed(0)
    critic = wdist.critics.ridge_critic(shape)
    u = critic[1].weight.detach()[0]
    assert float(u.norm()) == pytest.approx(1.0, abs=1e-5)
    x = torch.randn(500, *shape, requires_grad=True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    grad = grad.flatten(1)
    slopes = grad @ u
    # grad f(x) = g'(<u, x>) u: along u only, with a slope of at most 1 in size
    torch.testing.assert_close(grad, slopes[:, None] * u, rtol=0, atol=1e-6)
    assert slopes.abs().max() <= 1 + 1e-4
    assert wdist.lipschitz_bound(critic, shape) <= 1 + 1e-4
    assert wdist.critics.lipschitz_by_construction(critic)


@pytest.mark.parametrize("shape, rank", [((64,), 16), ((3, 4, 4), 5)])
def test_the_subspace_critic_is_a_certified_function_of_a_learned_projection(shape, rank):
    torch.manual_seed(0)
    critic = wdist.critics.subspace_critic(shape, rank)
    u = critic[1].weight.detach()
    torch.testing.assert_close(u @ u.T, torch.eye(rank), rtol=0, atol=1e-5)  # orthonormal rows
    x = torch.randn(500, *shape, requires_grad=True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    grad = grad.flatten(1)
    # grad f(x) = U^T grad g(U x): in the row space of U, and of norm at most 1
    torch.testing.assert_close(grad, (grad @ u.T) @ u, rtol=0, atol=1e-6)
    assert grad.norm(dim=1).max() <= 1 + 1e-4
    assert wdist.lipschitz_bound(critic, shape) <= 1 + 1e-4
    assert wdist.critics.lipschitz_by_construction(critic)
    with pytest.raises(ValueError, match="rank must be between 1 and a sample's 48 values, got 49"):
        wdist.critics.subspace_critic((3, 4, 4), 49)


@pytest.mark.parametrize("critic", ["linear", "auto"])
def test_a_chosen_linear_critic_scores_each_test_chunk_by_its_fit_to_every_other_sample(critic):
    """Cross-fitting within the test split: chunk j's values come from the linear critic set
    from the means of all samples but chunk j (never from one that saw them); the value is
    the mean of the chunks' gaps, and the kept critic is set from all the samples."""
    n, d = 1000, 8
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(n, d, generator=gen) + torch.tensor([1.0] + [0.0] * (d - 1))
    y = torch.randn(n, d, generator=gen)
    res = wdist.estimate_w1(x, y, critic=critic, steps=20, eval_every=10, progress=False, seed=3)
    assert res.settings.critic == "linear"
    # The estimator's own split (same seed, x then y, the default holdout): the test splits are known.
    split, holdout = torch.Generator().manual_seed(3), wdist.estimator.DEFAULT_HOLDOUT
    (sx,), (sy,) = (wdist.data.split_indices(n, holdout, split, name) for name in ("x", "y"))
    chunks = wdist.estimator.CLOSED_FORM_TEST_FOLDS
    gaps = []
    for cx, cy in zip(torch.tensor_split(sx.test, chunks), torch.tensor_split(sy.test, chunks)):
        others_x = torch.ones(n, dtype=torch.bool).index_fill_(0, cx, False)
        others_y = torch.ones(n, dtype=torch.bool).index_fill_(0, cy, False)
        direction = x[others_x].double().mean(0) - y[others_y].double().mean(0)
        gaps.append(float(direction @ (x[cx].double().mean(0) - y[cy].double().mean(0)) / direction.norm()))
    assert res.value == pytest.approx(sum(gaps) / chunks, rel=1e-5)
    direction = x.double().mean(0) - y.double().mean(0)
    with torch.no_grad():
        slope = (res.critic(torch.eye(d)) - res.critic(torch.zeros(1, d))).reshape(-1).double()
    assert torch.allclose(slope, direction / direction.norm(), atol=1e-5)
    assert res.n_train == (n, n)
    assert res.settings.ema == 0.0  # set, not stepped: no average to keep


def _auto_on_a_lattice(dim: int, rank: int, chosen: str, at_least: float):
    """``auto`` on a lattice of flats (spacing 8, 3,000 a side): the ``chosen`` critic kept,
    an honest estimate of ``at_least`` the true W1 or more; the run and the lattice's
    directions in the learned projection's coordinates (norm 1: in its row space)."""
    pair = wdist.datasets.lattice_pair(dim, rank, period=8.0, seed=0)
    truth, se = pair.truth(200_000)
    x, y = pair.sample(3000, seed=1)
    res = wdist.estimate_w1(x, y, progress=False, seed=0)
    assert res.settings.critic == chosen
    assert res.lower <= truth + 3 * se
    assert at_least * truth <= res.value
    projection = res.critic[1].weight.detach().double()
    return res, projection @ torch.from_numpy(pair.directions).T


@pytest.mark.slow
def test_auto_finds_a_difference_carried_by_one_direction_with_the_ridge_critic():
    """A lattice in D=32, one direction (the potential a wedge about one flat): ``auto``
    keeps the ridge critic, within 10 % of the true W1, its direction the lattice's; the
    linear critic's validation gap is far below."""
    res, held = _auto_on_a_lattice(32, 1, "ridge", 0.9)
    gaps = res.settings.candidates
    assert gaps["linear"] < 0.9 * gaps["ridge"]
    assert abs(float(held[0, 0])) > 0.95


@pytest.mark.slow
def test_auto_finds_a_difference_carried_by_a_subspace_with_the_subspace_critic():
    """A lattice in D=64 spanning 4 directions: ``auto`` keeps the subspace critic, whose
    validation gap is above both MLP candidates' (which spread their gradient over the 60
    directions that carry nothing), at 0.7 of the truth or more; its learned projection
    holds lattice directions."""
    res, held = _auto_on_a_lattice(64, 4, "subspace", 0.7)
    gaps = res.settings.candidates
    assert gaps["subspace"] > 1.05 * max(gaps["mlp (input_noise=0.7)"], gaps["mlp (input_noise=0)"])
    assert int((held.norm(dim=0) > 0.9).sum()) >= 2


@pytest.mark.parametrize("ridge_gap, chosen", [(1.049, "linear"), (1.051, "ridge"), (0.9, "linear")])
def test_a_trained_critic_must_beat_the_closed_form_one_by_a_validation_standard_error(ridge_gap, chosen):
    """One-standard-error rule: the linear critic (validation gap 1.0, standard error 0.05)
    stays chosen unless a trained critic's best validation gap passes 1.05."""
    from types import SimpleNamespace
    from wdist.estimator import _Candidate, _choose

    def trainer(gap, se):
        return SimpleNamespace(state=SimpleNamespace(best_val=gap, history=[{"val_se": 9.0}, {"val_se": se}]))

    candidates = [_Candidate(name, 0.0, name) for name in ("mlp", "ridge", "linear", "anchors")]
    trained = {"mlp": trainer(0.5, 0.01), "ridge": trainer(ridge_gap, 0.01), "linear": trainer(1.0, 0.05),
               "anchors": trainer(-1.0, 0.01)}
    assert _choose(candidates, trained).label == chosen
    user = _Candidate(wdist.critics.linear_critic((4,)), 0.0, "Sequential")  # a module: no closed form
    assert _choose([user, candidates[2]], {"Sequential": trainer(1.01, 0.01), "linear": trainer(1.0, 0.05)}) \
        .label == "linear"
    assert _choose([user, candidates[1]], {"Sequential": trainer(1.01, 0.01), "ridge": trainer(1.0, 0.05)}) \
        .label == "Sequential"


def test_a_test_split_keeps_at_most_max_test_split_samples_and_the_rest_trains():
    """Past 10,000 test samples a side, held-out samples go to training: a split of
    2 x 25,000 at holdout=0.5 tests 10,000 (not 12,500), validates a fifth of the
    rest and trains on the remaining 12,000; a small side keeps its fraction."""
    cap = wdist.estimator.MAX_TEST_SPLIT
    assert cap == 10_000
    (big,) = wdist.data.split_indices(25_000, 0.5, torch.Generator().manual_seed(0), "x", max_test=cap)
    assert (len(big.train), len(big.val), len(big.test)) == (12_000, 3_000, 10_000)
    assert sorted(torch.cat([big.train, big.val, big.test]).tolist()) == list(range(25_000))
    (small,) = wdist.data.split_indices(1_000, 0.5, torch.Generator().manual_seed(0), "x", max_test=cap)
    assert len(small.test) == 500
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(25_000, 4, generator=gen) + 1.0, torch.randn(15_000, 4, generator=gen)
    res = wdist.estimate_w1(x, y, critic="linear", holdout=0.5, progress=False)
    assert res.n_test == (cap, 7_500) and res.settings.holdout == 0.5
    default = wdist.estimate_w1(x, y, critic="linear", progress=False)  # holdout 0.3: 7,500 and 4,500
    assert default.n_test == (7_500, 4_500) and default.settings.holdout == wdist.estimator.DEFAULT_HOLDOUT == 0.3
    assert res.lower <= 2.0 <= res.upper  # W1 = |shift| = 2 for a translation


def test_the_kept_critic_is_the_moving_average_of_the_trained_parameters(monkeypatch):
    """Validation scores, and the estimator keeps, the exponential moving average of
    the parameters (decay min(DEFAULT_EMA, (1 + t) / (10 + t)) at step t), not the last iterate."""
    from wdist.training import CriticTrainer

    trajectory = []
    original_init, original_step = CriticTrainer.__init__, CriticTrainer._step

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        trajectory.append([p.detach().clone() for p in self.critic.parameters()])

    def step(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        trajectory.append([p.detach().clone() for p in self.critic.parameters()])
        return out

    monkeypatch.setattr(CriticTrainer, "__init__", init)
    monkeypatch.setattr(CriticTrainer, "_step", step)
    x, y = _shifted_gaussians(400, 4, shift=0.5)
    res = wdist.estimate_w1(x, y, critic="mlp", steps=30, eval_every=30, progress=False, seed=1)
    assert len(trajectory) == 31  # the initial parameters, then one entry per step
    average = [p.clone() for p in trajectory[0]]
    for t, params in enumerate(trajectory[1:]):
        decay = min(wdist.estimator.DEFAULT_EMA, (1 + t) / (10 + t))
        average = [a + (1 - decay) * (p - a) for a, p in zip(average, params)]
    kept = list(res.critic.parameters())
    assert all(torch.allclose(k, a, atol=1e-6) for k, a in zip(kept, average))
    assert not all(torch.allclose(k, p, atol=1e-4) for k, p in zip(kept, trajectory[-1]))  # not the last step
    assert res.lipschitz <= 1 + 1e-4  # the average is certified like any parameters
    assert res.settings.ema == wdist.estimator.DEFAULT_EMA  # and the report says so


@pytest.mark.slow  # 12-24 s: out of test-fast's 3 minutes
def test_the_learning_rate_drops_only_when_both_sides_are_samplers():
    """A finite split's plateau is where over-fitting starts and the moving average has
    settled there: the run stops at its first plateau.  Fresh draws cannot be over-fitted:
    the step is first divided by 10, twice (``LR_DROPS_FRESH``)."""
    x, y = _shifted_gaussians(600, 2, shift=0.0)  # one distribution: the gap plateaus at once
    finite = wdist.estimate_w1(x, y, critic="mlp", eval_every=5, progress=False, seed=0)
    assert finite.stopped == "converged"
    assert {h["lr"] for h in finite.history} == {finite.settings.lr}
    gen = torch.Generator().manual_seed(0)

    def sampler(n):
        return torch.randn(n, 2, generator=gen)

    fresh = wdist.estimate_w1(sampler, sampler, critic="mlp", eval_every=5, test_size=500, restarts=1,
                              progress=False, seed=0)  # one start: the drops are the point here
    assert fresh.stopped == "converged"
    lr = fresh.settings.lr
    assert sorted({h["lr"] for h in fresh.history}, reverse=True) == pytest.approx([lr, lr / 10, lr / 100])


def _plateau_trainer(wait_while_under_fitted: bool, **options):
    """A trainer whose validation gap is pinned at 1.0 (standard error 0.01): every
    evaluation after the first is a plateau, so only the stopping rule decides the end
    (``options``: more TrainConfig fields)."""
    from dataclasses import replace

    from wdist.data import Samples
    from wdist.training import CriticTrainer, TrainConfig

    x, y = _shifted_gaussians(40, 2)
    cfg = replace(TrainConfig(max_steps=10_000, batch_size=8, lr=1e-3, eval_every=10, early_stop=True,
                              lr_drops=0, wait_while_under_fitted=wait_while_under_fitted), **options)
    idx = torch.arange(20)
    trainer = CriticTrainer(wdist.critics.mlp_critic((2,), width=16, depth=1), Samples(x, "x"), Samples(y, "y"),
                            (idx, idx), (idx + 20, idx + 20), cfg, torch.device("cpu"))
    trainer.validation_gap = lambda: (1.0, 0.01)
    return trainer


def _evaluations_until_stop(trainer, train_gaps) -> int | None:
    for i, train_gap in enumerate(train_gaps, start=1):
        trainer.state.step += trainer.cfg.eval_every
        if trainer._evaluate(train_gap):
            return i
    return None


def test_a_finite_plateau_stops_the_run_only_once_the_training_gap_has_caught_up():
    """On a plateau, a critic whose training gap is below the best validation gap by more
    than its standard error (0.01 here) is lagging behind its own objective and trains on;
    once the training gap is within that of validation (or above it: over-fitting), the
    plateau ends the run, as every plateau did with ``wait_while_under_fitted=False``."""
    patience = 5  # TrainConfig's default
    first_plateau = 1 + patience  # evaluations: the first sets the best, five more without gain
    lagging = _plateau_trainer(True)
    assert _evaluations_until_stop(lagging, [0.98] * 40) is None
    assert lagging.state.stopped == "max_steps"
    # It stops at a plateau once the mean of the last five training gaps has caught up
    # (within two plateaus: the window first fills with the higher values).
    caught_up = _evaluations_until_stop(lagging, [0.995] * 40)
    assert caught_up is not None and caught_up <= 2 * patience and lagging.state.stopped == "converged"
    assert _evaluations_until_stop(_plateau_trainer(True), [0.995] * 40) == first_plateau
    assert _evaluations_until_stop(_plateau_trainer(True), [1.2] * 40) == first_plateau  # over-fitting
    # The mean of the window decides, not its last value: (4 x 0.5 + 1.3) / 5 < 0.99.
    assert _evaluations_until_stop(_plateau_trainer(True), [0.5] * 5 + [1.3]) is None
    assert _evaluations_until_stop(_plateau_trainer(False), [0.98] * 40) == first_plateau


def test_a_validation_gap_that_creeps_up_is_not_a_plateau():
    """The plateau is judged over a window: the best validation gap must rise by a tenth of its
    standard error (0.01 here) over the last ``patience`` evaluations.  Steps of 0.05 standard
    errors add up to 0.25 over five evaluations (progress; a rule counting single gains
    above 0.1 standard errors would stop at the sixth); steps of 0.01 add up to 0.05 (plateau)."""
    creeping, flat = _plateau_trainer(False), _plateau_trainer(False)
    for trainer, step in ((creeping, 0.0005), (flat, 0.0001)):
        gaps = iter([1.0 + step * i for i in range(100)])
        trainer.validation_gap = lambda gaps=gaps: (next(gaps), 0.01)
    assert _evaluations_until_stop(creeping, [1.0] * 40) is None
    assert _evaluations_until_stop(flat, [1.0] * 40) == 6
    # A checkpoint of the older rule (evaluations without gain) resumes at the same window.
    state = flat.state_dict()
    del state["progress"]["window_start"]
    state["progress"]["bad_evals"] = 2
    flat.load_state_dict(state)
    assert flat.state.window_start == len(flat.state.history) - 2


def test_two_samplers_judge_a_plateau_over_ten_evaluations():
    """With two samplers the plateau window is SAMPLER_PATIENCE = 10 evaluations, with a finite
    side 5.  A validation gap creeping up by 0.015 standard errors an evaluation (0.15 over ten,
    0.075 over five) is progress over ten evaluations and a plateau over five: the slow climb
    of a many-funnel critic after its first learning-rate drop."""
    from wdist.estimator import SAMPLER_PATIENCE, _train_config

    fresh, finite = _train_config(None, None, None, None, 0, None), _train_config(None, None, None, None, 0, 1000)
    assert (fresh.patience, finite.patience, SAMPLER_PATIENCE) == (10, 5, 10)
    stops = {}
    for name, cfg in (("fresh", fresh), ("finite", finite)):
        trainer = _plateau_trainer(False, patience=cfg.patience)
        gaps = iter([1.0 + 0.00015 * i for i in range(100)])
        trainer.validation_gap = lambda gaps=gaps: (next(gaps), 0.01)
        stops[name] = _evaluations_until_stop(trainer, [1.0] * 60)
    assert stops == {"fresh": None, "finite": 6}


def test_a_candidate_trailing_the_leader_stops_at_its_first_plateau():
    """At a plateau a critic whose best validation gap (1.0, standard error 0.01) trails the
    leader's by more than TRAILING_FRACTION of it and three standard errors stops there:
    no learning-rate drop, no under-fitted wait.  Within that margin, or with no leader,
    the drops (two here) and the wait run as before; with a fixed step count nothing stops."""
    from wdist.training import TRAILING_FRACTION

    first_plateau, patience = 6, 5
    assert TRAILING_FRACTION == 0.25
    trailing = _plateau_trainer(True, lr_drops=2, leader_gap=1.5)  # 1.0 < 1.5 - 0.375
    assert _evaluations_until_stop(trailing, [0.9] * 40) == first_plateau  # 0.9: under-fitted, yet stops
    assert trailing.state.stopped == "trailing" and trailing.state.lr_drops == 0
    assert {h["lr"] for h in trailing.state.history} == {1e-3}
    steps = trailing.state.step
    trailing.fit()  # as when resumed from a checkpoint written at that stop: nothing to train
    assert trailing.state.step == steps
    for leader in (1.3, -math.inf):  # 1.0 >= 1.3 - 0.325: within the margin
        close = _plateau_trainer(False, lr_drops=2, leader_gap=leader)
        assert _evaluations_until_stop(close, [1.0] * 40) == first_plateau + 2 * patience
        assert close.state.stopped == "converged" and close.state.lr_drops == 2
    waiting = _plateau_trainer(True, leader_gap=1.3)
    assert _evaluations_until_stop(waiting, [0.9] * 40) is None  # the under-fitted wait still holds
    # Near a zero gap three standard errors (0.03) decide: a leader of 0.025 is not far
    # enough ahead of a critic pinned at 0.0, one of 0.035 is.
    for leader, stops_at in ((0.025, None), (0.035, first_plateau)):
        near_zero = _plateau_trainer(True, leader_gap=leader)
        near_zero.validation_gap = lambda: (0.0, 0.01)
        assert _evaluations_until_stop(near_zero, [-0.1] * 40) == stops_at
    fixed = _plateau_trainer(False, leader_gap=10.0, early_stop=False)
    assert _evaluations_until_stop(fixed, [1.0] * 40) is None


@pytest.mark.slow  # 12-24 s: out of test-fast's 3 minutes
def test_auto_trains_each_candidate_against_the_best_validation_gap_before_it(monkeypatch):
    """``auto`` gives each candidate the best validation gap of the ones trained before it
    on the same split as ``leader_gap`` (none for the first), in each fold."""
    import wdist.estimator as estimator

    seen, original = [], estimator._train_candidate

    def record(candidate, k, xs, ys, cfg, *args, **kwargs):
        trainer, start_gaps = original(candidate, k, xs, ys, cfg, *args, **kwargs)
        seen.append((k, candidate.label, cfg.leader_gap, trainer.state.best_val))
        return trainer, start_gaps

    monkeypatch.setattr(estimator, "_train_candidate", record)
    x, y = _shifted_gaussians(300, 4, shift=1.0)
    res = wdist.estimate_w1(x, y, eval_every=20, folds=2, progress=False, seed=0)
    assert [label for k, label, _, _ in seen if k == 0] == list(res.settings.candidates)
    for k in (0, 1):
        fold = [(lead, best) for j, _, lead, best in seen if j == k]
        assert fold[0][0] == -math.inf
        assert all(lead == max(best for _, best in fold[:i]) for i, (lead, _) in enumerate(fold) if i > 0)


def test_only_finite_samples_wait_while_the_critic_is_under_fitted():
    from wdist.estimator import _train_config

    assert _train_config(None, None, None, None, 0, 500).wait_while_under_fitted  # a finite split
    assert not _train_config(None, None, None, None, 0, None).wait_while_under_fitted  # two samplers


def test_the_mlp_tries_each_input_noise_level_where_its_spec_has_several():
    """The levels a candidate is trained at: the given ``input_noise``; else the critic's
    defaults from NOISE_MIN_DIM dimensions on, except with two samplers (nothing to over-fit)."""
    from wdist.critics import MLP_NOISE_LEVELS, NOISE_MIN_DIM, SUBSPACE_MIN_DIM
    from wdist.estimator import _with_noise_levels

    def levels(critic, dim, noise=None, fresh=False):
        return [(c.name, c.noise, c.label) for c in _with_noise_levels([critic], (dim,), noise, fresh)]

    assert MLP_NOISE_LEVELS == (0.7, 0.0)
    assert levels("mlp", NOISE_MIN_DIM) == [("mlp", 0.7, "mlp (input_noise=0.7)"), ("mlp", 0.0, "mlp (input_noise=0)")]
    assert levels("mlp", NOISE_MIN_DIM - 1) == [("mlp", 0.0, "mlp")]
    assert levels("mlp", 128, fresh=True) == [("mlp", 0.0, "mlp")]
    assert levels("mlp", 128, noise=0.3) == [("mlp", 0.3, "mlp")]
    assert levels("anchors", 128) == [("anchors", 0.0, "anchors")]
    net = wdist.critics.linear_critic((128,))
    assert levels(net, 128) == [("Sequential", 0.0, "Sequential")]
    # Images get the MLP on their flattened pixels beside the convolutional critic.
    assert wdist.critics.auto_candidates((3, 8, 8)) == ["bcop", "mlp", "linear", "anchors"]
    # The subspace critic from SUBSPACE_MIN_DIM values a sample on, where the MLP's statistics suffer.
    assert SUBSPACE_MIN_DIM == 64
    assert wdist.critics.auto_candidates((SUBSPACE_MIN_DIM,)) == ["mlp", "ridge", "subspace", "linear", "anchors"]
    assert wdist.critics.auto_candidates((SUBSPACE_MIN_DIM - 1,)) == ["mlp", "ridge", "linear", "anchors"]


def test_validation_keeps_the_input_noise_level_with_the_best_gap():
    """With two levels the MLP is trained at each exactly as a run given that level alone
    (same splits, initialisation, batches and noise stream), the candidates report both
    validation gaps, the better one is kept, and the estimate is that run's estimate."""
    gen = torch.Generator().manual_seed(2)
    # A 2-d disc and a ring around it, embedded in 64 dimensions: a curved optimum.
    basis = torch.linalg.qr(torch.randn(64, 2, generator=gen))[0].T
    angle = 2 * torch.pi * torch.rand(2, 500, generator=gen)
    radius = torch.stack([torch.rand(500, generator=gen).sqrt(), 1.5 + 0.1 * torch.rand(500, generator=gen)])
    planar = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)
    x, y = planar[1] @ basis, planar[0] @ basis
    kwargs = dict(critic="mlp", steps=60, eval_every=20, progress=False, seed=1)
    both = wdist.estimate_w1(x, y, **kwargs)
    alone = {level: wdist.estimate_w1(x, y, input_noise=level, **kwargs) for level in (0.7, 0.0)}
    assert both.settings.candidates == pytest.approx(
        {f"mlp (input_noise={level:g})": run.settings.candidates["mlp"] for level, run in alone.items()})
    gaps = {level: run.settings.candidates["mlp"] for level, run in alone.items()}
    assert gaps[0.7] != gaps[0.0]  # the noise changes the fit, so the choice is a real one
    best = max(gaps, key=gaps.get)
    assert both.settings.critic == "mlp" and both.settings.input_noise == best
    assert both.value == alone[best].value and both.std_error == alone[best].std_error
    assert both.history == alone[best].history
    # Each level's training is timed, and the times add up to no more than the whole run.
    timed = both.settings.candidate_seconds
    assert list(timed) == list(both.settings.candidates) and all(t > 0 for t in timed.values())
    assert sum(timed.values()) <= both.seconds


def test_identical_distributions_interval_contains_zero(device):
    x, _ = _shifted_gaussians(2000, 4)
    y = torch.randn(2000, 4, generator=torch.Generator().manual_seed(99))
    res = wdist.estimate_w1(x, y, steps=200, progress=False, device=device)
    assert res.lower <= 0 <= res.upper
    assert res.train_value > res.value  # in-sample gap is optimistic


def test_deterministic_for_a_fixed_seed(device):
    x, y = _shifted_gaussians(600, 4, shift=0.5)
    kwargs = dict(critic="mlp", steps=60, eval_every=20, progress=False, device=device)
    runs = [wdist.estimate_w1(x, y, seed=3, **kwargs) for _ in range(2)]
    assert runs[0].value == runs[1].value and runs[0].history == runs[1].history
    other = wdist.estimate_w1(x, y, seed=4, **kwargs)
    assert other.value != runs[0].value


def test_datasets_and_dataloaders_give_the_same_result_as_tensors(device):
    x, y = _shifted_gaussians(300, 3, shift=0.5)
    kwargs = dict(critic="mlp", steps=40, eval_every=20, progress=False, device=device)
    ref = wdist.estimate_w1(x, y, **kwargs)
    labels = torch.zeros(300)
    ds = wdist.estimate_w1(TensorDataset(x, labels), DataLoader(TensorDataset(y)), **kwargs)
    assert ds.value == pytest.approx(ref.value, abs=1e-6)


def test_images_numpy_and_uneven_sample_counts(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 8, 8, generator=gen)
    y = (torch.rand(90, 1, 8, 8, generator=gen) + 0.1).numpy()
    res = wdist.estimate_w1(x, y, critic="bcop", steps=30, eval_every=10, progress=False, device=device)
    assert res.n_test == (36, 27)  # the default holdout, 0.3, of 120 and 90
    assert res.lipschitz <= 1 + 1e-4
    assert 0 < res.value <= wdist.exact_w1(x, y)  # shift of 0.1 per pixel: clearly positive


def test_result_to_dict_is_json_and_complete():
    x, y = _shifted_gaussians(200, 2)
    res = wdist.estimate_w1(x, y, critic="mlp", steps=20, eval_every=10, progress=False)
    d = json.loads(json.dumps(res.to_dict()))
    for key in ("value", "lower", "upper", "lipschitz", "train_value", "history", "settings"):
        assert key in d
    assert "critic" not in d
    assert d["history"][0]["step"] == 10
    assert res.summary().startswith("W1: ")
    assert "95% CI [" in res.summary() and "Lipschitz <= " in res.summary()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "x,y,match",
    [
        (torch.zeros(10, 3), torch.zeros(10, 4), "sample shapes differ"),
        (torch.full((10, 3), float("nan")), torch.zeros(10, 3), "x: 10 sample.*NaN or Inf"),
        (torch.zeros(10, 3), torch.tensor([[0.0, 1, float("inf")]] * 5), "y: 5 sample.*NaN or Inf"),
        (torch.zeros(1, 3), torch.zeros(10, 3), "x: need at least 2 samples"),
        (torch.zeros(0, 3), torch.zeros(10, 3), "x: need at least 2 samples"),
        (np.array([["a", "b"]] * 4), torch.zeros(4, 2), "x: unsupported dtype"),
        (torch.zeros(4, 2, dtype=torch.complex64), torch.zeros(4, 2), "x: unsupported dtype"),
        (torch.zeros(10, 2), torch.zeros(10, 2, dtype=torch.bool), "y: unsupported dtype"),
        (torch.zeros(4, 2, 2, 2, 2), torch.zeros(4, 2), "x: expected shape"),
        ("not data", torch.zeros(4, 2), "x: expected a torch tensor"),
        (TensorDataset(torch.zeros(1, 2)), torch.zeros(4, 2), "x: need at least 2 samples"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(x, y, match):
    with pytest.raises(ValueError, match=match):
        wdist.estimate_w1(x, y, steps=1, progress=False)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(holdout=1.0), "holdout"),
        (dict(confidence=1.5), "confidence"),
        (dict(steps=0), "steps"),
        (dict(batch_size=-1), "batch_size"),
        (dict(lr=float("nan")), "lr"),
        (dict(critic="nope"), "critic: unknown name 'nope'"),
        (dict(critic=nn.Sequential(nn.Linear(3, 3), nn.Softplus())), "critic: cannot be certified"),
        (dict(device="tpu"), "device"),
        (dict(device="cuda:7"), "device"),
    ],
)
def test_bad_options_raise_value_error_naming_the_argument(kwargs, match):
    x, y = torch.zeros(10, 3), torch.ones(10, 3)
    with pytest.raises(ValueError, match=match):
        wdist.estimate_w1(x, y, progress=False, **kwargs)


def test_too_few_samples_for_the_holdout():
    with pytest.raises(ValueError, match="x: 3 samples are too few"):
        wdist.estimate_w1(torch.zeros(3, 2), torch.ones(30, 2), holdout=0.3, progress=False)


# --------------------------------------------------------------------------- statistical (slow)


@pytest.mark.slow
def test_translation_of_32d_gaussians_default_settings():
    """W1(N(0, I), N(c, I)) = ||c|| = 1; 20,000 samples per side, all defaults."""
    x, y = _shifted_gaussians(20_000, 32, shift=1.0, seed=1)
    res = wdist.estimate_w1(x, y, progress=False)
    assert res.value == pytest.approx(1.0, rel=0.03)
    assert res.lower <= 1.0
    assert res.lipschitz <= 1 + 1e-4


def test_settings_read_like_the_dict_they_were():
    x, y = _shifted_gaussians(200, 3)
    res = wdist.estimate_w1(x, y, critic="linear", steps=10, eval_every=10, progress=False)
    assert res.settings["critic"] == res.settings.get("critic") == res.settings.critic == "linear"
    assert res.settings.get("no such setting", 7) == 7
    assert res.to_dict()["settings"]["folds"] == 1
