"""The certified dual estimator of W1.

Kantorovich-Rubinstein duality: ``W1(P, Q) = sup_{Lip(f) <= 1} E_P f - E_Q f``.
For any fixed ``f`` with certified constant ``L`` (``wdist.lipschitz_bound``),
``g = f / max(1, L)`` is 1-Lipschitz, so ``E_P g - E_Q g <= W1(P, Q)``.

The samples of each side are split three ways: a *test* split (``holdout``)
used exactly once, at the end; a *validation* split (a fifth of the rest)
used for early stopping and for choosing the best critic; and a *training*
split for gradient steps.  The reported value is the test-split gap of the
chosen ``g``: an unbiased estimate of ``E_P g - E_Q g``, with a CLT
confidence interval from the independent test values.  Because the test split
influenced nothing, the interval is honest; the training-split gap
(``train_value``) is optimistic and reported only for diagnosis.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist

import torch
from torch import nn

from . import distributed
from .checkpoint import Checkpointer
from .critics import CRITICS, auto_candidates, check_critic_name
from .data import Samples, as_samples, split_indices
from .exact import upper_bound
from .lipschitz import lipschitz_bound, lipschitz_by_construction
from .results import Bracket, EstimateSettings, W1Result, bracket_side_level
from .training import CriticTrainer, TrainConfig

__all__ = ["estimate_w1", "W1Result", "resolve_device"]

DEFAULT_MAX_STEPS = 4000


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


def _check_options(holdout: float, confidence: float, steps, batch_size, lr) -> None:
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout: must be in [0, 1), got {holdout}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps: must be a positive int, got {steps!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: must be a positive number, got {lr!r}")


def estimate_w1(
    x,
    y,
    *,
    critic: str | nn.Module = "auto",
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    holdout: float = 0.5,
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
) -> W1Result:
    """Certified lower-bound estimate of W1(P, Q) from samples ``x ~ P``, ``y ~ Q``.

    Parameters
    ----------
    x, y : Tensor, ndarray, Dataset or DataLoader
        Vectors ``(N, D)`` or images ``(N, C, H, W)`` (``(N, H, W)`` is read as
        one channel); the two sides may have different N.  Values are used as
        given: W1 is in the inputs' L2 units (no hidden normalisation).
    critic : "auto", a name in ``wdist.critics.CRITICS`` or nn.Module
        ``"auto"`` trains the expressive critic (BCOP/MaxMin convolutions for
        images, Björck/MaxMin MLP for vectors), the linear critic and the
        semi-dual anchors critic, and keeps the one with the best *validation*
        gap (the test split is untouched by the choice).  Baselines: "rko",
        "ossn", "wgan-gp" and ReLU variants "bcop-relu", "rko-relu",
        "ossn-relu"; "ossn" and "wgan-gp" are not 1-Lipschitz by
        construction (``settings["lipschitz_by_construction"]`` is False and
        the summary says so).  A module must be certifiable by
        :func:`wdist.lipschitz_bound`.
    steps : int, optional
        Training steps.  ``None``: up to 4000 with early stopping on the
        validation gap (learning rate /10 twice on plateaus, then stop).
        Given: exactly that many steps, the best validation critic is kept.
    batch_size : int, optional
        Per side; default ``min(256, training split size)``.
    lr : float, optional
        Adam learning rate, default 1e-3 (1e-2 for the anchors critic).
    holdout : float
        Fraction of each side kept for the final test evaluation; 0 evaluates
        in-sample (optimistic: no longer a statistically valid bound).
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
        _check_options(holdout, confidence, steps, batch_size, lr)
        xs, ys = as_samples(x, "x", num_workers), as_samples(y, "y", num_workers)
        if xs.shape != ys.shape:
            raise ValueError(f"x and y: sample shapes differ: {xs.shape} vs {ys.shape}")
        dev = resolve_device(device)
        gen = torch.Generator().manual_seed(seed)
        split_x, split_y = split_indices(len(xs), holdout, gen, "x"), split_indices(len(ys), holdout, gen, "y")
        candidates = _candidates(critic, xs.shape)
    world = distributed.world_size()
    progress = progress and distributed.is_main()
    distributed.check_same("x, y and the options of estimate_w1", (
        len(xs), len(ys), xs.shape, seed, steps, batch_size, lr, holdout, confidence, eval_every,
        critic if isinstance(critic, str) else type(critic).__name__))

    n_train_min = min(len(split_x[0]), len(split_y[0]))
    if (batch_size or min(256, n_train_min)) < world:
        raise ValueError(f"batch_size: the global batch ({batch_size or n_train_min}) must be at least "
                         f"the number of processes ({world})")
    cfg = TrainConfig(
        max_steps=steps if steps is not None else DEFAULT_MAX_STEPS,
        batch_size=batch_size or min(256, n_train_min),
        lr=float(lr) if lr is not None else 1e-3,
        eval_every=eval_every or 100,
        early_stop=steps is None,
        seed=seed,
    )
    trained = {}
    for candidate in candidates:
        name = candidate if isinstance(candidate, str) else type(candidate).__name__
        torch.manual_seed(seed)
        spec = CRITICS.get(name) if isinstance(candidate, str) else None
        if spec is not None:
            anchors = _anchor_samples(ys, split_y[0], seed, spec.max_anchors) if spec.needs_anchors else None
            model = spec.build(xs.shape, anchors)
        else:
            model = candidate
        cand_cfg = cfg if lr is not None or spec is None else replace(cfg, lr=spec.lr)
        trainer = CriticTrainer(model.to(dev), xs, ys, (split_x[0], split_y[0]),
                                (split_x[1], split_y[1]), cand_cfg, dev)
        on_eval = None
        if checkpoint is not None:
            ckpt = Checkpointer(Path(checkpoint) / name, every=checkpoint_every or cfg.eval_every)
            if resume:
                with distributed.agreement():
                    ckpt.restore(trainer)
                distributed.check_same("checkpoint step", trainer.state.step)
            on_eval = ckpt.maybe_save
        trainer.fit(progress=progress, on_eval=on_eval, desc=f"training {name} critic")
        trained[name] = trainer
    # Choose on validation only: the test split stays untouched until the end.
    critic_name = max(trained, key=lambda k: trained[k].state.best_val)
    trainer = trained[critic_name]
    model = trainer.critic
    if not distributed.same_parameters(model):  # cannot happen with identical updates: guard it
        raise RuntimeError("distributed training: the critic's parameters differ between ranks")

    lipschitz = lipschitz_bound(model, xs.shape)
    scale = max(1.0, lipschitz)  # g = f / scale is certified 1-Lipschitz; gap and se scale alike
    test_gap, test_se = trainer.gap((split_x[2], split_y[2]))
    value, se = test_gap / scale, test_se / scale
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    # In-sample mode (holdout=0) evaluates on the training split already: no second pass.
    train_value = value if holdout == 0 else trainer.gap((split_x[0], split_y[0]))[0] / scale
    s = trainer.state
    result = W1Result(
        value=value,
        lower=value - z * se,
        upper=value + z * se,
        lipschitz=lipschitz,
        train_value=train_value,
        std_error=se,
        confidence=confidence,
        history=s.history,
        critic=model,
        n_train=(len(split_x[0]), len(split_y[0])),
        n_validation=(len(split_x[1]), len(split_y[1])),
        n_test=(len(split_x[2]), len(split_y[2])),
        steps=s.step,
        best_step=s.best_step,
        stopped=s.stopped,
        seconds=time.perf_counter() - start,
        settings=EstimateSettings(
            critic=critic_name, lipschitz_by_construction=lipschitz_by_construction(model),
            max_steps=cfg.max_steps, batch_size=cfg.batch_size,
            lr=cfg.lr, holdout=holdout, eval_every=cfg.eval_every,
            early_stop=cfg.early_stop, device=str(dev), seed=seed, world_size=world,
            sample_shape=list(xs.shape),
            candidates={k: t.state.best_val for k, t in trained.items()},
        ),
    )
    if bracket:
        # Exact solves are not split between ranks: rank 0 solves, the others receive.
        solved = None
        with distributed.agreement():
            if distributed.is_main():
                upper = upper_bound(x, y, confidence=bracket_side_level(confidence), seed=seed)
                solved = Bracket.from_sides(result.value, result.std_error, upper, confidence)
        result.bracket = distributed.broadcast_object(solved)
    return result
