"""Training a critic to maximise the Kantorovich-Rubinstein gap.

The loop is deterministic given (seed, step): the minibatch of step ``t`` is
a slice of an epoch permutation drawn from a generator seeded by
``(seed, side, epoch)``, so a run resumed from a checkpoint at step ``t`` sees
exactly the batches an uninterrupted run would.

Inside a process group (:mod:`wdist.distributed`) each rank takes the strided
share ``batch[rank::world]`` of that global batch, the critic is wrapped in
``DistributedDataParallel``, and every held-out statistic is all-reduced: the
ranks compute together what one process computes with the same global batch.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .cuda_options import CudaOptions
from .data import Samples, critic_values, training_batches
from .lipschitz import training_penalty
from .nn import retract_

__all__ = ["TrainConfig", "CriticTrainer", "critic_values", "gap_statistics", "make_adam", "TRAILING_FRACTION"]

#: How far (a fraction of the leader's validation gap) a candidate may trail at a plateau and
#: still earn its learning-rate drops and under-fitted waits.  What those have added after a
#: first plateau, measured on benchmarks/known_truth.py: at most 0.04 of the true W1 (the drops,
#: Korotin's D=128 4-funnel sampler pair) and 0.08-0.11 (the wait, the same pair at 50k per
#: side); a quarter is more than twice either.  What it saves: the anchors critic on the
#: 16-funnel sampler pair sits at -0.40 of the truth against the MLP's +0.95 and trained
#: 2,000 steps through its two drops (156 s); it now stops at its first plateau (800, 68 s).
TRAILING_FRACTION = 0.25


@dataclass
class TrainConfig:
    max_steps: int
    batch_size: int
    lr: float
    eval_every: int
    early_stop: bool
    patience: int = 5
    lr_drops: int = 2
    lr_drop_factor: float = 0.1
    seed: int = 0
    #: Standard deviation of Gaussian noise added to every training input (data units; 0: none).
    input_noise: float = 0.0
    #: The same, in units of the training data's RMS coordinate spread (for reports).
    input_noise_relative: float = 0.0
    #: Decay of the exponential moving average of the parameters that validation
    #: scores and that is kept (0: the raw parameters, no average).
    ema: float = 0.0
    #: On a plateau, train on while the critic is under-fitted: the mean training gap of the
    #: last ``patience`` evaluations is below the best validation gap by more than that
    #: gap's standard error.  A critic that does clearly worse on the samples it trains on
    #: than on held-out ones is lagging behind its own objective (slow, or smoothed by input
    #: noise), so the plateau is the optimiser's and more steps can help; once the training
    #: gap has caught up, a plateau is where over-fitting starts, and the run stops.  For
    #: finite samples; with two samplers every batch is fresh and the drops decide.
    wait_while_under_fitted: bool = False
    #: The best validation gap of the candidates trained before this one on the same
    #: validation split (``critic="auto"``; -inf: none).  At a plateau, a critic that trails
    #: it by more than :data:`TRAILING_FRACTION` of it (and three standard errors) stops:
    #: the learning-rate drops and the under-fitted wait refine a critic, they do not close
    #: such a gap, and it would not be chosen.
    leader_gap: float = -math.inf


def gap_statistics(fx: torch.Tensor, fy: torch.Tensor) -> tuple[float, float]:
    """Gap ``mean fx - mean fy`` and its CLT standard error (independent samples).

    ``se^2 = s_x^2 / n_x + s_y^2 / n_y`` with unbiased sample variances.  In a
    process group ``fx``/``fy`` are this rank's values and the statistics are
    those of all ranks' values together (all-reduced moments).
    """
    (nx, mx, m2x), (ny, my, m2y) = distributed.moments(fx, fy)
    var = (m2x / (nx - 1) if nx > 1 else 0.0) / nx + (m2y / (ny - 1) if ny > 1 else 0.0) / ny
    return mx - my, math.sqrt(var)


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for these parameters.

    Same update rule; one pass instead of about ten elementwise passes per
    step (5 x 512 x 512 parameters on one CPU thread: 0.9 ms vs 6.1 ms).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr)


def _fresh_batches(sampler, batch_size: int, device: torch.device, pin_memory: bool) -> Iterator[torch.Tensor]:
    while True:
        batch = sampler(batch_size, device)  # a sampler drawing on the device keeps its batch there
        yield batch.pin_memory() if pin_memory and batch.device.type == "cpu" else batch


def _batches(samples: Samples, indices: torch.Tensor | None, cfg: TrainConfig, side: int, start: int, sampler,
             device: torch.device, pin_memory: bool = False):
    """(this rank's batches, global batch size) for steps ``start, ...``; a sampler draws each batch fresh.

    ``pin_memory`` (CUDA): batches in page-locked memory, so that their
    ``non_blocking`` copy overlaps the GPU's work on the previous step.
    """
    if sampler is not None:
        return _fresh_batches(sampler, cfg.batch_size, device, pin_memory), cfg.batch_size
    return training_batches(samples, indices, cfg.batch_size, cfg.seed, side, start, pin_memory)


@dataclass
class _State:
    step: int = 0
    best_val: float = -math.inf
    best_step: int = 0
    #: First evaluation of the current plateau window (evaluations before it are
    #: behind the last restart, learning-rate drop or under-fitted wait).
    window_start: int = 0
    lr_drops: int = 0
    stopped: str = "max_steps"
    #: The best validation gap when ``fit(pause_at_plateau=True)`` paused (None: it has not).
    paused_at: float | None = None
    history: list = field(default_factory=list)


class CriticTrainer:
    """Maximise ``mean f(x) - mean f(y)`` on the training split, select on validation.

    One forward over the concatenated batch of both sides per step (kernels
    built once per step); a critic that defines ``penalty(x, y) -> Tensor``
    has it added to the loss.  Every ``eval_every`` steps the validation gap is
    computed; the best critic is kept; on a plateau (the best validation gap
    rose by less than a tenth of its standard error over the last ``patience``
    evaluations, :meth:`_plateau`) the learning rate is divided by 10
    (``lr_drops`` times), then training stops (if ``early_stop``; with
    ``cfg.wait_while_under_fitted`` only once the training gap has caught up
    with validation); a critic that trails ``cfg.leader_gap`` by more than
    :data:`TRAILING_FRACTION` of it stops at its first plateau (:meth:`_trailing`).

    With ``cfg.ema > 0`` what validation scores, and what is kept, is the
    exponential moving average of the free parameters (decay
    ``min(ema, (1 + t) / (10 + t))`` after step t: the warm-up keeps the
    average close behind the first fast climb).  Every layer builds its
    constrained weight from its free parameters, so the average is certified
    like any other point; it filters the minibatch noise that the last iterate
    carries, which early stopping on a noisy validation gap would otherwise chase.
    """

    def __init__(
        self,
        critic: nn.Module,
        x: Samples,
        y: Samples,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor],
        cfg: TrainConfig,
        device: torch.device,
        samplers: tuple = (None, None),
    ) -> None:
        self.critic, self.x, self.y = critic, x, y
        self.samplers = samplers  # per side: draw training batches fresh instead of from ``train``
        self.train_idx, self.val_idx = train, val
        self.cfg, self.device = cfg, device
        # Gradients through DDP (averaged over ranks); everything else on the bare critic.
        self.model = distributed.wrap_ddp(critic, device)
        self.optimizer = make_adam(critic.parameters(), cfg.lr)
        self.state = _State()
        self.best_params = copy.deepcopy(critic.state_dict())
        # Input noise has its own stream: DataLoaders draw from the global RNG, and the
        # noise must not depend on whether the samples came as tensors or as a Dataset.
        self.noise_rng = torch.Generator(device=device).manual_seed(cfg.seed + 0x5EED)
        self.fresh_draws: int | None = None  # set by a closed-form fit (adopt)
        self._pause_at_plateau = False  # set by fit()
        # Polyak average of the parameters (free, unconstrained tensors: every
        # layer builds its constrained weight from them, so the average is as
        # certifiable as the raw critic).
        self.ema_params: list[torch.Tensor] | None = None
        if cfg.ema > 0:
            self._restart_average()

    # -- checkpointing -----------------------------------------------------
    def state_dict(self) -> dict:
        s = self.state
        return {
            "critic": self.critic.state_dict(),
            "best_params": self.best_params,
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "noise_rng": self.noise_rng.get_state(),
            "progress": {
                "step": s.step, "best_val": s.best_val, "best_step": s.best_step,
                "window_start": s.window_start, "lr_drops": s.lr_drops, "stopped": s.stopped,
                "paused_at": s.paused_at,
            },
            "history": list(s.history),
            **({"ema": [t.clone() for t in self.ema_params]} if self.ema_params is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.best_params = state["best_params"]
        self.optimizer.load_state_dict(state["optimizer"])
        # .cpu(): a checkpoint loaded with map_location="cuda" holds the CPU
        # generator's state on the GPU, which set_rng_state refuses.
        torch.set_rng_state(state["rng"].cpu())
        if "noise_rng" in state:
            self.noise_rng.set_state(state["noise_rng"].cpu())
        progress = dict(state["progress"])
        if "bad_evals" in progress:  # older checkpoints counted evaluations without gain
            progress["window_start"] = len(state["history"]) - progress.pop("bad_evals")
        self.state = _State(**progress, history=list(state["history"]))
        if self.ema_params is not None:
            for mine, saved in zip(self.ema_params, state["ema"]):
                mine.copy_(saved)

    # -- training ------------------------------------------------------------
    def gap(self, indices: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        """(gap, standard error) of the current critic on the given x and y indices
        (each rank scores its share; the statistics cover all of them)."""
        bs = max(self.cfg.batch_size, 256)
        fx = critic_values(self.critic, self.x, distributed.share(indices[0]), bs, self.device)
        fy = critic_values(self.critic, self.y, distributed.share(indices[1]), bs, self.device)
        return gap_statistics(fx, fy)

    def validation_gap(self) -> tuple[float, float]:
        return self.gap(self.val_idx)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def fit(
        self,
        progress: bool = False,
        on_eval: Callable[["CriticTrainer"], None] | None = None,
        desc: str = "training critic",
        pause_at_plateau: bool = False,
    ) -> None:
        """Train until the stopping rule (or ``cfg.max_steps``); the critic is then the best one.

        ``pause_at_plateau``: stop at the first validation plateau instead, before its
        learning-rate drop or stop, with ``state.stopped == "paused"`` and the critic's
        parameters (raw and averaged) as they are, so that a later ``fit()`` goes on exactly
        as an uninterrupted run would (``estimate_w1``'s ``restarts`` compares starts there).
        """
        cfg, s = self.cfg, self.state
        self._pause_at_plateau = pause_at_plateau
        if pause_at_plateau and s.paused_at is not None:  # paused once already (or resumed past it)
            return
        if s.stopped == "paused":
            s.stopped = "max_steps"
            if self._after_plateau(s.history[-1]["val_se"]):  # what the paused plateau decides
                self._keep_best()
                return
        if s.stopped in ("converged", "trailing"):  # resumed from a checkpoint written at the stop
            self._keep_best()
            return
        opts = CudaOptions.for_device(self.device)  # all off on the CPU
        xs, bx = _batches(self.x, self.train_idx[0], cfg, 0, s.step, self.samplers[0], self.device, opts.pin_memory)
        ys, by = _batches(self.y, self.train_idx[1], cfg, 1, s.step, self.samplers[1], self.device, opts.pin_memory)
        if self._penalty is not None and distributed.world_size() > 1:
            # The penalty's double backward runs outside DDP's gradient hooks.
            raise ValueError("critic: gradient-penalty critics (wgan-gp) run in one process only, not under torchrun")
        model = torch.compile(self.model) if opts.compile else self.model
        self.critic.train()
        bar = tqdm(total=cfg.max_steps, initial=s.step, disable=None if progress else True,
                   desc=desc, unit="step", leave=False)
        # Summed on the device: float(gap) at every step would wait for the GPU each time.
        running, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
        cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cudnn_benchmark or opts.cudnn_benchmark
        try:
            while s.step < cfg.max_steps:
                running += self._step(model, next(xs), next(ys), (bx, by), opts.autocast_bf16)
                s.step += 1
                count += 1
                bar.update(1)
                if s.step % cfg.eval_every == 0 or s.step == cfg.max_steps:
                    # float32 as before (it was torch.tensor of a Python float): histories stay bitwise equal.
                    mean_gap = float(distributed.all_reduce_sum(running.float())) / distributed.world_size()
                    stop = self._evaluate(mean_gap / count)
                    bar.set_postfix(val_gap=f"{s.best_val:.4g}")
                    running, count = torch.zeros_like(running), 0
                    if on_eval is not None:
                        on_eval(self)
                    if stop:
                        break
        finally:
            torch.backends.cudnn.benchmark = cudnn_benchmark
            bar.close()
        if s.stopped != "paused":
            self._keep_best()

    def _keep_best(self) -> None:
        self.critic.load_state_dict(self.best_params)
        self.critic.eval()

    def adopt(self, train_gap: float, draws: int | None = None) -> None:
        """Keep the critic as it is, a closed-form fit of the training data: one
        validation, no gradient steps.  ``draws``: the fresh samples per sampler
        side that the fit used (reported as ``n_train``)."""
        self.fresh_draws = draws
        self.ema_params = None  # nothing to average: the parameters were set, not stepped
        self._evaluate(train_gap)
        self.state.stopped = "closed_form"
        self.critic.eval()

    @property
    def sampler_draws(self) -> int:
        """Fresh samples drawn per sampler side for training."""
        return self.fresh_draws if self.fresh_draws is not None else self.state.step * self.cfg.batch_size

    @property
    def _penalty(self) -> Callable | None:
        """The critic's ``penalty(x, y)`` loss term, if it defines one (WGAN-GP)."""
        return training_penalty(self.critic)

    def _step(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, global_batch: tuple[int, int],
              autocast_bf16: bool) -> torch.Tensor:
        """One optimiser step on a batch of each side; the batch gap (float64, on the device).

        Under ``autocast_bf16`` the forward runs in bf16 where autocast allows;
        constrained kernels are still built in float32 and the gap is summed
        in float32.
        """
        xb = xb.to(self.device, non_blocking=True)
        yb = yb.to(self.device, non_blocking=True)
        batch = torch.cat([xb, yb])
        if self.cfg.input_noise > 0:
            # Trains the smoothed critic E f(x + sigma e): it cannot spike on single
            # training samples (the held-out gap stops falling as the training gap climbs).
            batch = batch + self.cfg.input_noise * torch.randn(batch.shape, generator=self.noise_rng,
                                                               device=batch.device, dtype=batch.dtype)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            out = model(batch).reshape(-1).float()  # .float(): no-op without autocast
        # Sums over this rank's share divided by the *global* batch sizes,
        # times world: DDP's average over ranks is then exactly the gap of
        # the global batch, even when the shares differ in size.
        bx, by = global_batch
        gap = (out[: len(xb)].sum() / bx - out[len(xb) :].sum() / by) * distributed.world_size()
        loss = -gap
        if self._penalty is not None:
            loss = loss + self._penalty(xb, yb)  # e.g. WGAN-GP's gradient penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        retract_(self.critic)
        if self.ema_params is not None:
            # Warm-up (TensorFlow's num_updates rule): early on the average follows the
            # raw parameters closely, so it does not lag behind the first fast climb.
            decay = min(self.cfg.ema, (1 + self.state.step) / (10 + self.state.step))
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_params, [p.detach() for p in self.critic.parameters()],
                                     1.0 - decay)
        return gap.detach().double()

    def _restart_average(self) -> None:
        """Start the moving average at the critic's current parameters."""
        self.ema_params = [p.detach().clone() for p in self.critic.parameters()]

    @contextlib.contextmanager
    def _averaged(self):
        """The critic with its averaged parameters, for a validation (no-op without an average)."""
        if self.ema_params is None:
            yield
            return
        params = list(self.critic.parameters())
        raw = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_([p.detach() for p in params], self.ema_params)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in params], raw)

    def _evaluate(self, train_gap: float) -> bool:
        """Record one evaluation; True when training should stop (or pause)."""
        s = self.state
        with self._averaged():
            val_gap, val_se = self.validation_gap()
            candidate = copy.deepcopy(self.critic.state_dict()) if val_gap > s.best_val else None
        lr = self.optimizer.param_groups[0]["lr"]
        s.history.append({"step": s.step, "train_gap": train_gap, "val_gap": val_gap,
                          "val_se": val_se, "lr": lr})
        if val_gap > s.best_val:
            s.best_val, s.best_step = val_gap, s.step
            self.best_params = candidate
        if not self._plateau(val_se):
            return False
        s.window_start = len(s.history)
        if self._pause_at_plateau:
            s.stopped, s.paused_at = "paused", s.best_val
            return True
        return self._after_plateau(val_se)

    def _after_plateau(self, val_se: float) -> bool:
        """At a plateau: stop a trailing critic, else drop the learning rate, else stop
        (unless waiting while under-fitted); True when training should stop."""
        cfg, s = self.cfg, self.state
        lr = self.optimizer.param_groups[0]["lr"]
        if cfg.early_stop and self._trailing(val_se):
            s.stopped = "trailing"
            return True
        if s.lr_drops < cfg.lr_drops:
            # Restart from the best critic at a lower rate: a plateau is often
            # the start of over-fitting the training split.
            s.lr_drops += 1
            self.critic.load_state_dict(self.best_params)
            if self.ema_params is not None:  # the average restarts there too
                self._restart_average()
            self._set_lr(lr * cfg.lr_drop_factor)
            return False
        if cfg.early_stop and not (cfg.wait_while_under_fitted and self._under_fitted()):
            s.stopped = "converged"
            return True
        return False

    def _plateau(self, val_se: float) -> bool:
        """The best validation gap rose by less than a tenth of its standard error over the
        last ``patience`` evaluations since the window started.

        A window, not a count of evaluations without a large enough single gain: a critic
        whose validation gap creeps up by small steps is still learning.  Judged on the
        population gaps of the critics kept (50,000 fresh draws a side, the 16-funnel photo
        pair of benchmarks/known_truth.py, seeds 0-2): ``auto`` (the MLP, with its learning
        rate of 3e-3) 0.976 -> 0.982 of the true W1, the BCOP critic alone 0.966 -> 0.970, at
        1.4-1.5x the time over three seeds (single BCOP runs 1.6-2.2x); neutral where the
        MLP over-fits (Korotin's D=128 pair at 10k per side, 20 seeds: 0.706 -> 0.706).
        """
        s, patience = self.state, self.cfg.patience
        if len(s.history) - s.window_start < patience:
            return False
        before = max((h["val_gap"] for h in s.history[:-patience]), default=-math.inf)
        return s.best_val <= before + 0.1 * val_se

    def _trailing(self, val_se: float) -> bool:
        """The best validation gap is below ``cfg.leader_gap`` by more than
        :data:`TRAILING_FRACTION` of the leader's gap and by more than three standard errors."""
        lead = self.cfg.leader_gap
        if not math.isfinite(lead):
            return False
        return self.state.best_val < lead - max(TRAILING_FRACTION * abs(lead), 3 * val_se)

    def _under_fitted(self) -> bool:
        """The mean training gap of the last ``patience`` evaluations is below the best
        validation gap by more than that gap's standard error."""
        s = self.state
        recent = [h["train_gap"] for h in s.history[-self.cfg.patience:]]
        best_se = next((h["val_se"] for h in reversed(s.history) if h["step"] == s.best_step), 0.0)
        return sum(recent) / len(recent) < s.best_val - best_se
