"""The certified dual estimator of W1.

Kantorovich-Rubinstein duality: ``W1(P, Q) = sup_{Lip(f) <= 1} E_P f - E_Q f``.
For any fixed ``f`` with certified constant ``L`` (``wdist.lipschitz_bound``),
``g = f / max(1, L)`` is 1-Lipschitz, so ``E_P g - E_Q g <= W1(P, Q)``.

The samples of each side are split three ways: a *test* split (``holdout``,
at most :data:`MAX_TEST_SPLIT` samples) used exactly once, at the end; a
*validation* split (a fifth of the rest) used for early stopping and for choosing the best critic; and a *training*
split for gradient steps.  The reported value is the test-split gap of the
chosen ``g``: an unbiased estimate of ``E_P g - E_Q g``, with a CLT
confidence interval from the independent test values.  Because the test split
influenced nothing, the interval is honest; the training-split gap
(``train_value``) is optimistic and reported only for diagnosis.

``folds=K`` cross-fits instead: K critics, each trained and chosen on all
folds but one and scored on that one, so every sample trains and tests.  A
side given as a sampler (:mod:`wdist.samplers`) has no split at all: every
batch is a fresh draw and the test samples are drawn after training.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Callable

import torch
from torch import nn

from . import distributed
from .checkpoint import Checkpointer
from .critics import CRITICS, CriticSpec, CrossFitCritic, auto_candidates, check_critic_name
from .data import Samples, Split, as_samples, critic_values, sample_mean, sampler_draws, sampler_mean, split_indices
from .exact import upper_bound
from .lipschitz import lipschitz_bound, lipschitz_by_construction
from .results import Bracket, EstimateSettings, W1Result, bracket_side_level
from .samplers import SamplerSource, as_sampler, is_sampler
from .training import CriticTrainer, TrainConfig, gap_statistics

__all__ = ["estimate_w1", "W1Result", "resolve_device"]

DEFAULT_MAX_STEPS = 4000
#: ... when both sides are samplers: fresh draws cannot be over-fitted, so a run ends when
#: its two learning-rate drops have converged, not at a cap.  At 4,000 the cap cut Korotin's
#: D=128, 16-funnel pair (seed 0) before its first drop, at 0.928 of the true W1 (296 s);
#: uncapped it dropped at 4,600 and 5,800 steps and converged at 6,000: 0.959 (449 s).
#: 20,000 gave the many-funnel pairs nothing: each converged on its own just past 10,000
#: (64 funnels at 10,300 steps, 0.903 of the truth against 0.905 cut at 10,000; 256 funnels
#: at 10,800, population gap 0.724 either way; benchmarks/README.md).
DEFAULT_MAX_STEPS_FRESH = 10_000
#: A finite run's step cap grows with its training split (the smaller side's): one step per
#: four training samples when that is more than ``DEFAULT_MAX_STEPS`` (past 16,000 training
#: samples a side, about 28,000 samples a side at the default split), up to
#: ``MAX_STEPS_FINITE``.  The stopping rule still ends a run on its first plateau once the
#: critic's training gap has caught up; the cap only cuts a critic that is still under-fitted
#: and improving, which a large split allows for longer.  Korotin's D=128, 4-funnel pair at
#: 50,000 a side (32,000 training samples, so 8,000 steps), critic="mlp", seeds 0-4: seed 0
#: 0.831 -> 0.852 of the true W1 (its best validation after 5,500 steps; 110 s -> 130 s),
#: seeds 1-4 stop before 4,000 steps as they did (0.867 / 0.907 / 0.894 / 0.828); mean
#: 0.865 -> 0.870.  Below 16,000 training samples a side nothing changes.
STEPS_PER_TRAINING_SAMPLE = 0.25
#: ... the most a finite run's cap grows to: a BCOP critic on a CPU (0.13 s a step at batch
#: 64 on 3x16x16) would otherwise be allowed hours by a large image folder.
MAX_STEPS_FINITE = 16_000
DEFAULT_BATCH = 256
#: ... when both sides are samplers.  Fresh draws cannot be over-fitted, and a potential
#: made of many local pieces is learned from the few samples of each batch that fall in
#: each piece: on Korotin's D=128 64-funnel pair (seed 0, the MLP) a batch of 256 learns
#: only ``-||z||`` about the cube's centre (0.63 of the true W1, its gradient at a cosine of
#: 0.98 with that cone's, whatever the steps or learning-rate drops); at 2,048 the default
#: run reached 0.875 with the plateau window of 5 evaluations it then had (0.905 since
#: ``SAMPLER_PATIENCE``; benchmarks/README.md, "What moved these numbers"), 256 funnels
#: 0.60 -> 0.63 (0.714 since); 16 funnels 0.966 -> 0.964 over seeds 0-2 (neutral).  The price on two CPU cores:
#: 0.15 s a step instead of 0.015 (4 funnels: the same 0.986 in 331 s instead of 54 s).
DEFAULT_BATCH_FRESH = 2048
#: Fresh samples per side for validation when an input is a sampler (``test_size`` unset):
#: scored at every evaluation, so kept to what a few hundred evaluations can afford.  50,000
#: left the MLP's population gap where it was on Korotin's D=128 pairs (N=16 0.967 -> 0.967,
#: N=4 0.999 -> 1.001) at 1.3-1.9x the time.
DEFAULT_SAMPLER_VALIDATION_DRAWS = 10_000
#: ... and for the test (``test_size`` unset): drawn once, after training, in chunks of
#: :data:`TEST_DRAW_CHUNK`.  A test value's noise is ``sqrt(s_x^2 / n + s_y^2 / n)``:
#: 10,000 draws left 1.4 % of the true W1 on Korotin's D=128 pairs, 50,000 leave 0.6 %
#: (the sample count FID's users are used to drawing), at a cost of seconds there
#: (0.03-0.9 s a side).  The 16-funnel pair, ``auto``, seeds 0-2, the same critics:
#: 0.948 +- 0.016 of the truth (0.933 / 0.965 / 0.947) -> 0.960 +- 0.006, each within 5 %;
#: the interval's half-width 2.9 % -> 1.3 %.
DEFAULT_SAMPLER_TEST_DRAWS = 50_000
#: Most samples drawn from a sampler in one call for the test: memory stays that of one chunk.
TEST_DRAW_CHUNK = 10_000
#: Most test samples per side that a finite split keeps (``folds=1``); the rest of
#: ``holdout`` goes to training.  10,000 give the gap a standard error of about 1% of W1
#: (sqrt(2 / n) / W1 = 0.9% for a shift of 1.5; 1.4% measured on the pair below; the
#: sampler regime tests on as many), while the critic keeps learning from more: Korotin's
#: D=128, 4-funnel pair at 50,000 per side, seeds 0-4, 0.745 +- 0.010 of the true W1 with
#: 25,000 test samples and 0.810 +- 0.049 with 10,000 (every seed up, +0.006 to +0.131;
#: 28 s -> 49 s a seed).  A chosen linear critic learns nothing more from it and its
#: interval widens (by sqrt(2.5) at 50,000 per side).
MAX_TEST_SPLIT = 10_000
#: Default fraction of each side in the test split.  Korotin's D=128, 4-funnel pair at
#: 10,000 per side (critic="mlp", seeds 0-5; the held-out gap there is limited by what the
#: critic learns from its training split): holdout 0.5 -> 0.3 moves the estimate
#: 0.665 -> 0.704 of the true W1 (up on all six seeds) and the interval's lower end
#: 0.627 -> 0.654 (up on five); 0.2 gives 0.709 and 0.647 (the interval widens more than
#: the value gains).  Where the critic is already at the truth (photo-patch and digit
#: funnels, 3 seeds each) the value moves inside its seed noise (0.966 -> 0.969,
#: 1.001 -> 1.001) and the interval widens by sqrt(5 / 3).
DEFAULT_HOLDOUT = 0.3
#: Fresh draws per sampler side for a closed-form (linear) fit.  The direction's error
#: is about sqrt(2 d / n) / W1 in angle: 0.4% of a shift of 1.5 in d = 256.
CLOSED_FORM_DRAWS = 65_536
#: Chunks of the test split over which a chosen closed-form (linear) critic is cross-fitted:
#: chunk j is scored by the critic set from the means of every other sample of its fold, so
#: a direction learned from the training split (40% of the samples at holdout 0.5) is
#: learned from 95%.  Shift by 1.5 in d = 256, n = 5000, holdout 0.5 (300 simulated seeds):
#: 0.957 -> 0.977 of W1, coverage of the critics' population gap 0.950 -> 0.947
#: (10 chunks) / 0.953 (20).  Fitting costs two means, not training.
CLOSED_FORM_TEST_FOLDS = 10
#: Decay of the moving average of the critic's parameters that validation scores and
#: the estimator keeps (a horizon of about 100 steps; see :class:`CriticTrainer`).  The
#: average filters the minibatch noise of the last iterate: the BCOP critic on the
#: photo-patch funnel of ``benchmarks/known_truth.py`` held 0.976 of the true W1 at 1,000
#: steps instead of 0.971; D=128 N=4 at 10k per side 0.621 -> 0.638.
DEFAULT_EMA = 0.99
#: Evaluations in a plateau window when both sides are samplers (``TrainConfig.patience``; 5
#: for finite samples).  After its first learning-rate drop the 64-funnel critic of Korotin's
#: D=128 pair (seed 0, the MLP) still gains about 0.005 of the true W1 per 500 steps at batch
#: 2,048, too slowly for five evaluations to see: with 10 it trains to the 10,000-step cap and
#: reaches 0.905 (population 0.909) instead of 0.875 (0.877), in 1,610 s instead of 774 s on
#: two CPU cores (1,019 s since a draw runs numpy's BLAS on one thread; benchmarks/README.md,
#: "What moved these numbers").  Ten evaluations at 2,048 are 2 M draws a side, where five at
#: 256 (a finite split's batch) are 128 k.  Seed 0 is the best of seeds 0-2 there (0.905 /
#: 0.781 / 0.874), and 20 evaluations did not lift seed 1 (0.781 -> 0.794 at the cap, 1.7x the
#: time): its critic held 0.77 at 3e-3 for 3,000 steps.
SAMPLER_PATIENCE = 10
#: Learning-rate drops on a validation plateau when a side is a finite sample.  With the
#: average they gain nothing: a finite split's plateau is where over-fitting starts, and
#: the average has settled there already.  Default ``estimate_w1`` on the photo-patch
#: funnel (2 x 3,000 of 3x16x16): 0.976 in 197 s without drops, 0.976 in 372 s with two;
#: D=128 N=4, 10k per side: 0.638 in 17 s, 0.638 in 44 s.
LR_DROPS_FINITE = 0
#: ... and when both sides are samplers: fresh draws leave nothing to over-fit, and a
#: smaller step still converges further (D=128 N=4 sampler: 0.976 -> 1.013 of the truth
#: with two drops; the lower end of the interval stays below it).
LR_DROPS_FRESH = 2
#: Starts of a randomly initialised critic (``restarts``) when both sides are samplers; 1
#: otherwise.  With fresh draws a start decides where the MLP ends: at lr 3e-3 it climbs in
#: jumps, and a start without one by its first plateau gains little after the drops.  The best
#: of two starts at their first plateau (validation only; the test draws come later), on
#: Korotin's D=128 sampler pairs, seeds 0-2, value / truth (benchmarks/README.md, "Seeds"):
#: 16 funnels 0.966 +- 0.021 -> 0.984 +- 0.006 (seed 2 0.944 -> 0.992) in 1.38x the time,
#: 64 funnels 0.853 -> 0.862 in 1.64x, 256 funnels 0.658 -> 0.660 (0.714 / 0.626 / 0.634 ->
#: 0.658 / 0.664 / 0.658) in 1.10x.  Finite samples keep one start: what limits a finite run is
#: what its training split holds (the 4-funnel pair at 10,000 a side, 20 seeds: 0.702 +- 0.033
#: -> 0.705 +- 0.032, population gaps 0.706 -> 0.708, in 2.0x the time).
DEFAULT_RESTARTS_FRESH = 2


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; validates explicit requests.

    In a process group, ``"auto"`` and ``"cuda"`` mean this rank's GPU,
    ``cuda:LOCAL_RANK`` (one GPU per process).
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", distributed.local_rank()) if distributed.is_active() else torch.device("cuda")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device: unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available on this machine")
        if dev.index is None and distributed.is_active():
            dev = torch.device("cuda", distributed.local_rank())
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"device: unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


@dataclass
class _Side:
    """One side's data: finite samples (with per-fold splits) or a sampler."""

    name: str
    samples: Samples             # the finite data, or a sampler's validation draws
    folds: list[Split]
    sampler: SamplerSource | None = None
    test_size: int = 0           # fresh test samples per fold (sampler sides)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.samples.shape

    def n_test(self, folds: int) -> int:
        if self.sampler is not None:
            return self.test_size * folds
        return sum(len(self.fold(k).test) for k in range(folds)) if len(self.folds) > 1 else len(self.folds[0].test)

    def fold(self, k: int) -> Split:
        return self.folds[min(k, len(self.folds) - 1)]

    def test_values(self, critic: nn.Module, k: int, batch_size: int, device: torch.device) -> torch.Tensor:
        """Critic values on fold k's test samples (drawn now for a sampler: never seen in training)."""
        if self.sampler is None:
            idx = distributed.share(self.fold(k).test)
            return critic_values(critic, self.samples, idx, batch_size, device)
        return torch.cat([critic_values(critic, Samples(draw, self.name), torch.arange(len(draw)), batch_size, device)
                          for draw in sampler_draws(self.sampler, self.test_size, TEST_DRAW_CHUNK)])

    def anchors(self, fold: Split, seed: int, max_anchors: int) -> torch.Tensor:
        """Up to ``max_anchors`` training samples (never validation or test ones; a sampler draws fresh)."""
        if self.sampler is not None:
            return self.sampler(max_anchors)
        return _anchor_samples(self.samples, fold.train, seed, max_anchors)


def _prepare_side(obj, name: str, num_workers: int, holdout: float, folds: int, test_size: int | None,
                  gen: torch.Generator) -> _Side:
    if is_sampler(obj):
        if distributed.world_size() > 1:
            raise ValueError(f"{name}: sampler inputs run in one process only, not under torchrun")
        sampler = as_sampler(obj, name)
        n_val = test_size or DEFAULT_SAMPLER_VALIDATION_DRAWS
        n_test = test_size or DEFAULT_SAMPLER_TEST_DRAWS
        val = Samples(sampler(n_val), name)
        return _Side(name, val, [Split(None, torch.arange(n_val), None)], sampler, max(2, n_test // folds))
    samples = as_samples(obj, name, num_workers)
    return _Side(name, samples, split_indices(len(samples), holdout, gen, name, folds, MAX_TEST_SPLIT))


def _candidates(critic: str | nn.Module, shape: tuple[int, ...]) -> list[str | nn.Module]:
    if isinstance(critic, nn.Module):
        try:
            lipschitz_bound(critic, shape)
        except TypeError as exc:
            raise ValueError(f"critic: cannot be certified: {exc}") from exc
        return [critic]
    if not isinstance(critic, str):
        raise ValueError(f"critic: expected a name or an nn.Module, got {type(critic).__name__}")
    if critic == "auto":
        return auto_candidates(shape)
    check_critic_name(critic)  # before any training
    return [critic]


def _anchor_samples(samples: Samples, train_idx: torch.Tensor, seed: int, max_anchors: int) -> torch.Tensor:
    """Up to ``max_anchors`` training samples of y (never validation or test ones).

    In a process group each rank reads its share and all get the same anchors.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    idx = train_idx[torch.randperm(len(train_idx), generator=gen)[:max_anchors]]
    mine = torch.cat([torch.zeros((0, *samples.shape))] + list(samples.batches(distributed.share(idx), 1024)))
    return torch.stack(distributed.gather_strided(list(mine)))


def _check_options(holdout: float, confidence: float, steps, batch_size, lr, folds, test_size,
                   input_noise, restarts) -> None:
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout: must be in [0, 1), got {holdout}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("test_size", test_size),
                        ("restarts", restarts)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name}: must be a positive int, got {value!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: must be a positive number, got {lr!r}")
    if input_noise is not None and not (isinstance(input_noise, (int, float)) and 0 <= input_noise < math.inf):
        raise ValueError(f"input_noise: must be a number >= 0, got {input_noise!r}")
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 1:
        raise ValueError(f"folds: must be a positive int, got {folds!r}")
    if folds > 1 and holdout == 0:
        raise ValueError("folds: cross-fitting needs held-out folds; holdout=0 evaluates in-sample")


def _finite_max_steps(n_train: int) -> int:
    """Default step cap of a run on finite samples with ``n_train`` training samples (smaller side).

    >>> _finite_max_steps(5_600), _finite_max_steps(32_000), _finite_max_steps(500_000)
    (4000, 8000, 16000)
    """
    grown = math.ceil(n_train * STEPS_PER_TRAINING_SAMPLE)
    return min(MAX_STEPS_FINITE, max(DEFAULT_MAX_STEPS, grown))


def _train_config(steps, batch_size, lr, eval_every, seed, n_train_min: int | None) -> TrainConfig:
    default_batch = DEFAULT_BATCH_FRESH if n_train_min is None else min(DEFAULT_BATCH, n_train_min)
    default_steps = DEFAULT_MAX_STEPS_FRESH if n_train_min is None else _finite_max_steps(n_train_min)
    if (batch_size or default_batch) < distributed.world_size():
        raise ValueError(f"batch_size: the global batch ({batch_size or default_batch}) must be at least "
                         f"the number of processes ({distributed.world_size()})")
    return TrainConfig(
        max_steps=steps if steps is not None else default_steps,
        batch_size=batch_size or default_batch,
        lr=float(lr) if lr is not None else 1e-3,
        eval_every=eval_every or 100,
        early_stop=steps is None,
        seed=seed,
        ema=DEFAULT_EMA,
        lr_drops=LR_DROPS_FRESH if n_train_min is None else LR_DROPS_FINITE,
        patience=SAMPLER_PATIENCE if n_train_min is None else TrainConfig.patience,
        # A finite plateau ends the run only once the training gap has caught up with
        # validation: Korotin's D=128 4-funnel pair at 50k per side, seeds 0-4, 0.810 -> 0.836
        # of the true W1 (seed 0 trains to 4,000 steps instead of 2,200); 10k per side, the
        # image funnels and D=16 at 2k (over-fitting or keeping pace) stop where they did.
        wait_while_under_fitted=n_train_min is not None,
    )


@dataclass(frozen=True)
class _Candidate:
    """One critic to train: a registry name or a module, at one input-noise level."""

    critic: str | nn.Module
    noise: float   # relative to the data's spread (0: none)
    label: str     # its key in ``settings.candidates``

    @property
    def name(self) -> str:
        """The registry name, or the module's class name."""
        return self.critic if isinstance(self.critic, str) else type(self.critic).__name__

    @property
    def spec(self) -> CriticSpec | None:
        """The registry entry (None for a module)."""
        return CRITICS.get(self.critic) if isinstance(self.critic, str) else None

    @property
    def closed_form(self) -> bool:
        """Set from the two training means, not trained (the linear critic)."""
        return self.spec is not None and self.spec.fit_to_means is not None


def _with_noise_levels(candidates: list[str | nn.Module], shape: tuple[int, ...], noise: float | None,
                       fresh: bool) -> list[_Candidate]:
    """Every candidate at each of its input-noise levels: the given ``noise``, else the
    critic's defaults (``CRITICS[name].input_noise``; none when both sides are samplers:
    fresh draws leave nothing to over-fit, and the smoothing would only lower the gap).

    A critic trained at several levels is labelled with each, ``"mlp (input_noise=0.7)"``.
    """
    out = []
    for critic in candidates:
        spec = CRITICS.get(critic) if isinstance(critic, str) else None
        levels = (noise,) if noise is not None else (0.0,) if spec is None or fresh else spec.default_noise(shape)
        name = critic if isinstance(critic, str) else type(critic).__name__
        for level in levels:
            label = name if len(levels) == 1 else f"{name} (input_noise={level:g})"
            out.append(_Candidate(critic, float(level), label))
    return out


@dataclass
class _FoldFit:
    """The critic chosen on one fold's validation split, with every candidate's trainer."""

    trained: dict[str, CriticTrainer]   # by candidate label
    chosen: _Candidate
    seconds: dict[str, float]           # each candidate's training wall time, by label
    start_gaps: dict[str, list[float]]  # with restarts: each start's validation gap at its first plateau

    @property
    def name(self) -> str:
        """The chosen critic's registry (or class) name."""
        return self.chosen.name

    @property
    def trainer(self) -> CriticTrainer:
        return self.trained[self.chosen.label]


def _spec_config(cfg: TrainConfig, spec, given: frozenset[str]) -> TrainConfig:
    """``cfg`` with the critic's own defaults for what the caller did not set."""
    if "lr" not in given:
        cfg = replace(cfg, lr=spec.lr)
    if "batch_size" not in given and spec.batch_size is not None:
        cfg = replace(cfg, batch_size=max(distributed.world_size(), min(spec.batch_size, cfg.batch_size)))
    return cfg


def _coordinate_spread(xs: _Side, ys: _Side, k: int, seed: int) -> float:
    """RMS per-coordinate standard deviation of fold k's training data, both sides pooled
    (up to 2048 samples per side; a sampler draws them): the unit of ``input_noise``."""
    parts = []
    for side in (xs, ys):
        if side.sampler is not None:
            parts.append(side.sampler(2048))
            continue
        train = side.fold(k).train
        idx = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:2048]]
        parts.append(torch.cat(list(side.samples.batches(idx, 1024))))
    pooled = torch.cat(parts).flatten(1).double()
    return float(pooled.var(dim=0).mean().sqrt())


def _train_candidate(candidate: _Candidate, k: int, xs: _Side, ys: _Side, cfg: TrainConfig,
                     given: frozenset[str], dev: torch.device, spread: Callable[[], float], checkpoint,
                     checkpoint_every, resume, progress, restarts: int) -> tuple[CriticTrainer, list[float]]:
    """Train one candidate on fold k; (its trainer, each start's validation gap at its first plateau).

    With ``restarts > 1`` (a registry critic with a random start) ``restarts`` critics are
    initialised from different seeds and trained to their first validation plateau; the one
    with the best validation gap there goes on alone (drops, stop), the others are dropped.
    """
    name, relative = candidate.name, candidate.noise
    spec = candidate.spec
    sigma = relative * spread() if relative > 0 else 0.0  # before seeding: reading data may draw seeds
    cand_cfg = cfg if spec is None else _spec_config(cfg, spec, given)
    closed_form = candidate.closed_form
    if relative > 0 and not closed_form:  # in data units, from this fold's training data only
        cand_cfg = replace(cand_cfg, input_noise=sigma, input_noise_relative=relative)
    if closed_form:
        trainer = _new_trainer(candidate, spec, k, xs, ys, cand_cfg, dev, 0)
        _fit_closed_form(spec, trainer, xs, ys)
        return trainer, []
    starts = restarts if spec is not None and spec.random_start else 1
    trainers = [_new_trainer(candidate, spec, k, xs, ys, cand_cfg, dev, r) for r in range(starts)]
    fits = [functools.partial(_fit_start, trainer, candidate, k, xs, ys, r, starts, checkpoint, checkpoint_every,
                              resume, progress) for r, trainer in enumerate(trainers)]
    if starts == 1:
        fits[0]()
        return trainers[0], []
    for fit in fits:
        fit(pause_at_plateau=True)
    # The same validation draws score every start; the test samples are not drawn yet.
    at_plateau = [t.state.best_val if t.state.paused_at is None else t.state.paused_at for t in trainers]
    best = max(range(starts), key=at_plateau.__getitem__)
    fits[best]()
    return trainers[best], at_plateau


#: Seed offset between the starts of ``restarts`` (start r of fold k: ``seed + k + r * stride``):
#: far from the folds' ``seed + k`` and from the seeds a user steps through.
RESTART_SEED_STRIDE = 1_000_003


def _new_trainer(candidate: _Candidate, spec, k: int, xs: _Side, ys: _Side, cfg: TrainConfig,
                 dev: torch.device, start: int) -> CriticTrainer:
    """A trainer of ``candidate`` on fold k, its critic initialised from start ``start``'s seed."""
    torch.manual_seed(cfg.seed + k + start * RESTART_SEED_STRIDE)
    fx, fy = xs.fold(k), ys.fold(k)
    if spec is not None:
        anchors = ys.anchors(fy, cfg.seed, spec.max_anchors) if spec.needs_anchors else None
        model = spec.build(xs.shape, anchors)
    else:
        model = candidate.critic
    return CriticTrainer(model.to(dev), xs.samples, ys.samples, (fx.train, fy.train), (fx.val, fy.val),
                         cfg, dev, samplers=(xs.sampler, ys.sampler))


def _fit_start(trainer: CriticTrainer, candidate: _Candidate, k: int, xs: _Side, ys: _Side, start: int,
               starts: int, checkpoint, checkpoint_every, resume, progress, pause_at_plateau: bool = False) -> None:
    """Train (or resume) start ``start`` of a candidate; each start checkpoints in its own folder."""
    name, relative, cfg = candidate.name, candidate.noise, trainer.cfg
    on_eval = None
    if checkpoint is not None:
        folder = name if candidate.label == name else f"{name}-noise{relative:g}"
        folder = folder if k == 0 else f"{folder}.fold{k}"
        folder = folder if start == 0 else f"{folder}.start{start}"
        ckpt = Checkpointer(Path(checkpoint) / folder, every=checkpoint_every or cfg.eval_every)
        if resume and not trainer.state.history:  # once: a paused start goes on in memory
            with distributed.agreement():
                ckpt.restore(trainer)
            distributed.check_same("checkpoint step", trainer.state.step)
        on_eval = ckpt.maybe_save
    desc = (f"training {name} critic" + (f", input noise {relative:g}" if candidate.label != name else "")
            + (f" (fold {k + 1})" if len(xs.folds) > 1 or len(ys.folds) > 1 else "")
            + (f", start {start + 1} of {starts}" if starts > 1 else ""))
    trainer.fit(progress=progress, on_eval=on_eval, desc=desc, pause_at_plateau=pause_at_plateau)


def _training_mean(side: _Side, indices: torch.Tensor) -> torch.Tensor:
    if side.sampler is not None:
        return sampler_mean(side.sampler, CLOSED_FORM_DRAWS)
    return sample_mean(side.samples, indices)


def _set_to_means(spec, trainer: CriticTrainer, xs: _Side, ys: _Side) -> float:
    """Set a closed-form critic to the maximiser of its gap between the means of
    ``trainer.train_idx`` (a sampler side: fresh draws); that gap."""
    mean_x, mean_y = _training_mean(xs, trainer.train_idx[0]), _training_mean(ys, trainer.train_idx[1])
    critic = trainer.critic
    spec.fit_to_means(critic, mean_x, mean_y)
    with torch.no_grad():  # an affine critic's gap at the two means is its mean training gap
        return float(critic(mean_x.float()[None].to(trainer.device))
                     - critic(mean_y.float()[None].to(trainer.device)))


def _fit_closed_form(spec, trainer: CriticTrainer, xs: _Side, ys: _Side) -> None:
    """A critic whose training optimum has a closed form in the two training means (the
    linear critic): set it there, validate once.  Nothing to checkpoint: it is recomputed."""
    train_gap = _set_to_means(spec, trainer, xs, ys)
    trainer.adopt(train_gap, CLOSED_FORM_DRAWS if xs.sampler is not None or ys.sampler is not None else None)


def _chunk_sums(side: _Side, fold: Split, chunks: int):
    """(sum of all the fold's samples, their count, the test chunks, each chunk's sum): one pass."""
    rest = torch.cat([fold.train, fold.val])
    parts = torch.tensor_split(fold.test, chunks)
    sums = [sample_mean(side.samples, part) * len(part) for part in parts]
    total = sample_mean(side.samples, rest) * len(rest) + sum(sums)
    return total, len(rest) + len(fold.test), parts, sums


def _closed_form_fold(fit: _FoldFit, k: int, xs: _Side, ys: _Side, bs: int, dev) -> tuple[float, float, float] | None:
    """Fold k's test gap, its standard error and the largest bound, when its chosen critic
    has a closed form in two means and both sides are finite; else ``None``.

    The fold's test split is cut into :data:`CLOSED_FORM_TEST_FOLDS` chunks; chunk j is
    scored by the critic set from the means of all the fold's other samples (training,
    validation and the other chunks), so no test value comes from a critic that saw it,
    and the choice of this critic, made on validation, saw no test sample either.  As in
    ``folds=K``, the chunks' gaps are averaged and their variances pooled.  Afterwards the
    critic is set from all the fold's samples: the one to apply to new data.
    """
    if not fit.chosen.closed_form or xs.sampler is not None or ys.sampler is not None:
        return None
    spec = fit.chosen.spec
    fold_x, fold_y = xs.fold(k), ys.fold(k)
    if fold_x.test is fold_x.train:  # in-sample mode: nothing held out, the training fit stands
        return None
    # One chunk (a test split under 4 samples) is the plain refit on training + validation.
    chunks = max(1, min(CLOSED_FORM_TEST_FOLDS, len(fold_x.test) // 2, len(fold_y.test) // 2))
    sides = [_chunk_sums(side, fold, chunks) for side, fold in ((xs, fold_x), (ys, fold_y))]
    critic, gap, var, bounds = fit.trainer.critic, 0.0, 0.0, []
    for j in range(chunks):
        others = ((total - sums[j]) / (count - len(parts[j])) for total, count, parts, sums in sides)
        spec.fit_to_means(critic, *others)
        bound = lipschitz_bound(critic, xs.shape)
        fx, fy = (critic_values(critic, side.samples, distributed.share(parts[j]), bs, dev) / max(1.0, bound)
                  for side, (_, _, parts, _) in zip((xs, ys), sides))
        g, se = gap_statistics(fx, fy)
        gap, var = gap + g / chunks, var + (se / chunks) ** 2
        bounds.append(bound)
    spec.fit_to_means(critic, *(total / count for total, count, _, _ in sides))
    fit.trainer.train_idx = tuple(torch.cat([f.train, f.val, f.test]) for f in (fold_x, fold_y))
    return gap, math.sqrt(var), max(bounds)


def _fit_fold(k: int, candidates: list[_Candidate], xs: _Side, ys: _Side, cfg: TrainConfig,
              given: frozenset[str], dev, **kw) -> _FoldFit:
    """Train every candidate on fold k's training data; choose on its validation split only."""
    spread = functools.cache(lambda: _coordinate_spread(xs, ys, k, cfg.seed))
    trained, seconds, start_gaps = {}, {}, {}
    for c in candidates:
        start = time.perf_counter()
        # Validation is the same split for every candidate: the leader so far is the one to beat.
        leader = max((t.state.best_val for t in trained.values()), default=-math.inf)
        trained[c.label], gaps = _train_candidate(c, k, xs, ys, replace(cfg, leader_gap=leader), given, dev,
                                                  spread, **kw)
        seconds[c.label] = time.perf_counter() - start
        if gaps:
            start_gaps[c.label] = gaps
    chosen = _choose(candidates, trained)
    if not distributed.same_parameters(trained[chosen.label].critic):  # cannot happen with identical updates
        raise RuntimeError("distributed training: the critic's parameters differ between ranks")
    return _FoldFit(trained, chosen, seconds, start_gaps)


def _choose(candidates: list[_Candidate], trained: dict[str, CriticTrainer]) -> _Candidate:
    """The best validation gap, unless a closed-form critic is within one standard error of it.

    Breiman's one-standard-error rule, for the one critic validation is unfair to: a trained
    critic's best validation gap is the largest of many noisy evaluations, the closed-form
    (linear) critic's a single one, and at test time only the latter is refit on every other
    sample (:func:`_closed_form_fold`).  A shift by 1.5 in d=256, 5,000 a side, seed 0: the
    ridge critic's validation gap passed the linear one's by 0.0002 of W1 (the standard error
    is 0.036) and scored 0.939 on the test split, where the linear critic scores 0.964.
    """
    best = max(candidates, key=lambda c: trained[c.label].state.best_val)
    best_gap = trained[best.label].state.best_val
    for c in candidates:
        state = trained[c.label].state
        if c.closed_form and state.best_val >= best_gap - state.history[-1]["val_se"]:
            return c
    return best


def _score(fits: list[_FoldFit], xs: _Side, ys: _Side, cfg: TrainConfig,
           dev) -> tuple[float, float, float, nn.Module, list[float]]:
    """Pooled test gap of the certified fold critics, its standard error, max bound, and the critic.

    Fold k's critic scores only fold k's test samples (a closed-form critic: each
    chunk of them, by its fit to all the fold's other samples, :func:`_closed_form_fold`).
    Given the critics, the folds' test values are independent, so the variance of the pooled
    mean is the sum of the folds' weighted within-fold variances.
    """
    bs = max(cfg.batch_size, 256)
    gap, var, bounds, scales = 0.0, 0.0, [], []
    folds = len(fits)
    for k, fit in enumerate(fits):
        closed_form = _closed_form_fold(fit, k, xs, ys, bs, dev)
        critic = fit.trainer.critic
        bound = lipschitz_bound(critic, xs.shape)
        scale = max(1.0, bound)
        if closed_form is not None:
            g, se, chunk_bound = closed_form
            bound = max(bound, chunk_bound)
        else:
            fx = xs.test_values(critic, k, bs, dev) / scale
            fy = ys.test_values(critic, k, bs, dev) / scale
            g, se = gap_statistics(fx, fy)
        gap += g / folds
        var += (se / folds) ** 2
        bounds.append(bound)
        scales.append(scale)
    critic = fits[0].trainer.critic if folds == 1 else CrossFitCritic([f.trainer.critic for f in fits], scales)
    return gap, math.sqrt(var), max(bounds), critic, scales


def estimate_w1(
    x,
    y,
    *,
    critic: str | nn.Module = "auto",
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    confidence: float = 0.95,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
    num_workers: int = 0,
    eval_every: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    bracket: bool = False,
    folds: int = 1,
    test_size: int | None = None,
    input_noise: float | None = None,
    restarts: int | None = None,
) -> W1Result:
    """Certified lower-bound estimate of W1(P, Q) from samples ``x ~ P``, ``y ~ Q``.

    Parameters
    ----------
    x, y : Tensor, ndarray, Dataset, DataLoader, sampler or IterableDataset
        Vectors ``(N, D)`` or images ``(N, C, H, W)`` (``(N, H, W)`` is read as
        one channel); the two sides may have different N.  Values are used as
        given: W1 is in the inputs' L2 units (no hidden normalisation).
        A side that can be sampled at will (a generative model) may be given
        as a callable ``sampler(n) -> Tensor (n, ...)`` or an
        ``IterableDataset`` (:mod:`wdist.samplers`): every training batch is
        then drawn fresh, validation samples before training and test samples
        after it (``test_size``), so no sample is ever reused and the critic
        cannot over-fit.
    critic : "auto", a name in ``wdist.critics.CRITICS`` or nn.Module
        ``"auto"`` trains the expressive critics (BCOP/GroupSort convolutions
        and the MLP for images, the Björck/GroupSort MLP, the ridge critic
        ``g(<u, x>)`` and, from 64 dimensions on, the subspace critic ``g(U x)``
        of rank 16 for vectors), the linear critic and the semi-dual anchors
        critic, and keeps the one with the best *validation* gap (the test
        split is untouched by the choice); the linear critic is kept unless
        another beats its validation gap by one standard error.
        They train in turn; at a plateau, one that trails the best validation
        gap before it by more than a quarter of that gap (and three standard
        errors) stops there, without the learning-rate drops or the
        under-fitted wait (``wdist.training.TRAILING_FRACTION``).  Baselines: "rko",
        "ossn", "wgan-gp" and ReLU variants "bcop-relu", "rko-relu",
        "ossn-relu"; "ossn" and "wgan-gp" are not 1-Lipschitz by
        construction (``settings["lipschitz_by_construction"]`` is False and
        the summary says so).  A module must be certifiable by
        :func:`wdist.lipschitz_bound`.
    steps : int, optional
        Training steps.  ``None``: up to 4000 (on finite samples, one per four
        training samples of the smaller side when that is more, at most 16,000)
        with early stopping on the
        validation gap (a plateau of 5 evaluations stops a run on finite
        samples once the critic's training gap has caught up with its
        validation gap, to within the latter's standard error: a critic still
        clearly below it on its own training samples is slow, not over-fitting,
        and trains on; with two samplers the window is 10 evaluations, the
        learning rate is first divided by 10 twice, and the cap is 10,000).  Given: exactly that many steps, the best validation critic is
        kept.  What validation scores and the estimate keeps is the moving
        average of the parameters (decay 0.99, ``settings["ema"]``).
        The linear critic takes none: it is set to its exact training optimum,
        the direction of the difference of the training means (a sampler
        side: of 65,536 fresh draws).  Once chosen on finite samples, it is
        cross-fitted inside the test split: each tenth of the test samples is
        scored by the linear critic set from the means of all the other
        samples (97% of them learn the direction instead of 56%), and
        ``result.critic`` is set from all the samples (``n_train`` counts them).
    batch_size : int, optional
        Per side; default ``min(256, training split size)``, 2,048 when both sides
        are samplers (``DEFAULT_BATCH_FRESH``), at most 64 for the convolutional
        critics and 256 for the anchors critic (``wdist.critics.CRITICS[name].batch_size``).
    lr : float, optional
        Adam learning rate, default 1e-3 (3e-3 for the MLP, 1e-2 for the anchors critic).
    holdout : float
        Fraction of each side kept for the final test evaluation (default 0.3,
        ``DEFAULT_HOLDOUT``: a larger training split tightens the bound more
        than the wider interval costs where the critic is data-limited), at most
        10,000 samples a side (``MAX_TEST_SPLIT``: past that a sample tightens
        the bound more in training than in the test); 0 evaluates in-sample
        (optimistic: no longer a statistically valid bound).
    confidence : float
        Level of the two-sided CLT interval ``[lower, upper]``.
    device : "auto", "cpu", "cuda", "cuda:N"
    seed : int
        Fixes the splits, initialisation and batches (deterministic on CPU).
    progress : bool
        tqdm progress bar (shown on a terminal only).
    num_workers : int
        DataLoader workers for Dataset inputs.
    eval_every : int, optional
        Steps between validation evaluations (default 100).
    checkpoint, checkpoint_every, resume :
        Save the training state atomically to ``checkpoint`` every
        ``checkpoint_every`` steps (default: every evaluation); with
        ``resume=True`` continue from it.  The result equals an uninterrupted run.
    bracket : bool
        Also bracket the population W1 from above with exact solves on
        subsamples (:func:`wdist.bracket`); stored in ``result.bracket``.
    folds : int
        ``K > 1``: K-fold cross-fitting of finite samples.  Critic k is
        trained (and chosen, and stopped) on all folds but the k-th and scores
        only the k-th; the value is the mean over all samples, each scored by a
        critic that never saw it, so every sample both trains and tests
        (K times the training cost).  ``result.critic`` is then the mean of the
        K certified critics (1-Lipschitz), for scoring new data.
    test_size : int, optional
        Sampler inputs only: fresh samples per side for validation and for the
        test (default: 10,000 for validation, scored at every evaluation, and
        50,000 for the test, drawn once; the test value's noise falls as
        ``1 / sqrt(test_size)``).
    input_noise : float, optional
        Gaussian noise added to every *training* input, in units of the
        training data's RMS per-coordinate spread ``sqrt(mean_j Var x_j)``
        (both sides pooled); ``None``: each critic's default
        (``wdist.critics.CRITICS[name].input_noise``: from 64 dimensions on
        the MLP is trained twice, with 0.7 and with none, and validation keeps
        one -- noise stops it over-fitting a uniform cloud, and blurs what it
        must resolve on data near a low-dimensional set such as images;
        ``settings["input_noise"]`` says which won and ``settings["candidates"]``
        lists both; 0 for the other critics, and 0 when both sides are
        samplers: fresh draws leave nothing to over-fit).  The critic then
        maximises the gap of its smoothed version ``E f(x + sigma e)`` and
        cannot spike on single training samples; validation and test use
        ``f`` itself, unchanged, so the bound stays valid whatever
        ``input_noise`` is.
    restarts : int, optional
        Starts per critic with a random initialisation (the MLP and the
        convolutional critics; not the anchors or linear critics, whose start is
        fixed by the data): each start, from its own seed, trains to its first
        validation plateau, and only the one with the best validation gap there
        goes on through the learning-rate drops and the stop
        (``settings["start_gaps"]`` lists their gaps; start 0 is the run of
        ``restarts=1``).  The choice sees validation only, so the test samples
        stay untouched.  It costs ``restarts - 1`` more first stages (with
        ``steps`` given, a start that meets no plateau trains all of them, so
        each start costs a whole run); what it buys is a narrower spread over
        seeds where a critic's start decides its value.  ``None``: 2 when both
        sides are samplers (``DEFAULT_RESTARTS_FRESH``: on Korotin's D=128
        16-funnel pair, seeds 0-2, 0.966 +- 0.021 -> 0.984 +- 0.006 of the
        true W1 in 1.38x the time; benchmarks/README.md, "Seeds"), 1
        otherwise.

    Returns
    -------
    W1Result

    Raises
    ------
    ValueError
        For invalid inputs or options, naming the argument.

    Notes
    -----
    **Several processes.**  When a ``torch.distributed`` process group of
    more than one rank is initialised (e.g. under ``torchrun``), every rank
    calls ``estimate_w1`` with the *same full* ``x``, ``y`` and options; each
    rank then reads and scores only its strided share of the samples
    (Datasets are read lazily, so a rank never loads the others' shares).
    ``batch_size`` stays the *global* batch per side: each rank takes
    ``batch[rank::world]`` and ``DistributedDataParallel`` averages the
    gradients, so the run computes what one process computes with the same
    seed, up to the order of floating-point sums.  Held-out statistics are
    all-reduced; every rank returns the same result.  Only rank 0 writes
    checkpoints; all ranks resume from them.  See :mod:`wdist.distributed`.
    """
    start = time.perf_counter()
    with distributed.agreement():  # a rank that fails here stops all of them
        _check_options(holdout, confidence, steps, batch_size, lr, folds, test_size, input_noise, restarts)
        gen = torch.Generator().manual_seed(seed)
        xs = _prepare_side(x, "x", num_workers, holdout, folds, test_size, gen)
        ys = _prepare_side(y, "y", num_workers, holdout, folds, test_size, gen)
        if xs.shape != ys.shape:
            raise ValueError(f"x and y: sample shapes differ: {xs.shape} vs {ys.shape}")
        if test_size is not None and not (xs.sampler or ys.sampler):
            raise ValueError("test_size: applies to sampler inputs only (finite samples are split by holdout)")
        if checkpoint is not None and (xs.sampler or ys.sampler):
            raise ValueError("checkpoint: runs with sampler inputs cannot be resumed (their draws are not replayable)")
        if bracket and (xs.sampler or ys.sampler):
            raise ValueError("bracket: the exact upper side needs finite samples, not a sampler")
        dev = resolve_device(device)
        candidates = _candidates(critic, xs.shape)
    distributed.check_same("x, y and the options of estimate_w1", (
        len(xs.samples), len(ys.samples), xs.shape, seed, steps, batch_size, lr, holdout, confidence,
        eval_every, folds, input_noise, restarts, critic if isinstance(critic, str) else type(critic).__name__))
    train_sizes = [len(s.fold(0).train) for s in (xs, ys) if s.sampler is None]
    cfg = _train_config(steps, batch_size, lr, eval_every, seed, min(train_sizes) if train_sizes else None)
    n_folds = max(len(xs.folds), len(ys.folds))
    progress = progress and distributed.is_main()
    if input_noise is None and holdout == 0:
        input_noise = 0.0  # in-sample (crosscheck): fitting the samples themselves is the point
    fresh = xs.sampler is not None and ys.sampler is not None
    if restarts is None:
        restarts = DEFAULT_RESTARTS_FRESH if fresh else 1
    # A module given by the user is trained in place (one fold) or as pristine copies, made
    # before any training: a copy of a trained critic would carry what it saw to the next fold.
    per_fold = [_with_noise_levels(candidates if n_folds == 1 else [copy.deepcopy(c) for c in candidates],
                                   xs.shape, input_noise, fresh) for _ in range(n_folds)]
    given = frozenset(name for name, value in (("lr", lr), ("batch_size", batch_size)) if value is not None)
    fits = [_fit_fold(k, per_fold[k], xs, ys, cfg, given, dev, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume, progress=progress, restarts=restarts)
            for k in range(n_folds)]
    result = _result(fits, xs, ys, cfg, dev, confidence, holdout, start, restarts)
    if bracket:
        result.bracket = _bracket(x, y, result, confidence, seed)
    return result


def _result(fits, xs: _Side, ys: _Side, cfg: TrainConfig, dev, confidence: float, holdout: float,
            start: float, restarts: int) -> W1Result:
    value, se, lipschitz, model, scales = _score(fits, xs, ys, cfg, dev)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    first = fits[0].trainer
    scale = scales[0]  # fold 0's certified scale, computed once in _score
    # In-sample mode (holdout=0) evaluates on the training split already: no second pass.
    train_value = value if holdout == 0 else _train_gap(first, xs, ys) / scale
    s = first.state
    n_test = tuple(side.n_test(len(fits)) for side in (xs, ys))
    return W1Result(
        value=value, lower=value - z * se, upper=value + z * se, lipschitz=lipschitz,
        train_value=train_value, std_error=se, confidence=confidence, history=s.history, critic=model,
        # a sampler side: the fresh samples its training drew
        n_train=tuple(first.sampler_draws if d.sampler else len(idx) for d, idx in zip((xs, ys), first.train_idx)),
        n_validation=(len(xs.fold(0).val), len(ys.fold(0).val)), n_test=n_test,
        steps=s.step, best_step=s.best_step, stopped=s.stopped, seconds=time.perf_counter() - start,
        settings=EstimateSettings(
            critic=fits[0].name, lipschitz_by_construction=lipschitz_by_construction(model),
            max_steps=first.cfg.max_steps, batch_size=first.cfg.batch_size, lr=first.cfg.lr, holdout=holdout,
            eval_every=first.cfg.eval_every, early_stop=first.cfg.early_stop, device=str(dev),
            seed=first.cfg.seed, world_size=distributed.world_size(), sample_shape=list(xs.shape),
            candidates={k: t.state.best_val for k, t in fits[0].trained.items()},
            candidate_seconds=dict(fits[0].seconds),
            folds=len(fits), fold_critics=[f.name for f in fits],
            sampler=[xs.sampler is not None, ys.sampler is not None],
            input_noise=first.cfg.input_noise_relative, input_noise_sigma=first.cfg.input_noise,
            ema=first.cfg.ema if first.ema_params is not None else 0.0,
            restarts=restarts, start_gaps=dict(fits[0].start_gaps),
        ),
    )


def _train_gap(trainer: CriticTrainer, xs: _Side, ys: _Side) -> float:
    """The chosen critic's gap on its training split; with a sampler side (no split), the mean
    minibatch gap of the evaluation window where the critic was chosen."""
    if xs.sampler is None and ys.sampler is None:
        return trainer.gap(trainer.train_idx)[0]
    best = [h for h in trainer.state.history if h["step"] == trainer.state.best_step]
    return best[0]["train_gap"] if best else float("nan")


def _bracket(x, y, result: W1Result, confidence: float, seed: int) -> Bracket:
    # Exact solves are not split between ranks: rank 0 solves, the others receive.
    solved = None
    with distributed.agreement():
        if distributed.is_main():
            upper = upper_bound(x, y, confidence=bracket_side_level(confidence), seed=seed)
            solved = Bracket.from_sides(result.value, result.std_error, upper, confidence)
    return distributed.broadcast_object(solved)
