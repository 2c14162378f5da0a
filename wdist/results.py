"""What wdist computes: the estimate, the cross-check and the bracket.

One module for every result type (as geomloss keeps one results module), so
that readers of a result never import the code that produced it.  Each type
is a dataclass whose ``to_dict()`` is JSON-safe; the settings of an estimate
are a typed :class:`EstimateSettings` (read as attributes), serialised under
the same keys as always.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

from torch import nn

__all__ = ["W1Result", "EstimateSettings", "CrossCheck", "Bracket", "UpperBound", "bracket_side_level"]


class _ReadByKey:
    """``obj["name"]`` reads ``obj.name``: results were dicts before they were
    dataclasses, and code written against the dicts keeps working."""

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key.startswith("_") or not hasattr(self, key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get``: the field ``key``, or ``default`` when there is none."""
        try:
            return self[key]
        except KeyError:
            return default


@dataclass
class EstimateSettings(_ReadByKey):
    """How an estimate was made (``W1Result.settings``).

    Attributes
    ----------
    critic : str
        Name of the chosen critic (a registry name, or the module's class name).
    lipschitz_by_construction : bool
        False for critics certified only by their measured constant (OSSN, WGAN-GP).
    max_steps, batch_size, eval_every : int
        Training budget, global batch per side, steps between evaluations.
    lr : float
        Adam learning rate of the run's configuration.
    holdout : float
        Test fraction of each side (0: in-sample).
    early_stop : bool
        Whether the run could stop on a validation plateau.
    device : str
    seed, world_size : int
    sample_shape : list of int
        Shape of one sample, without the batch dimension.
    candidates : dict of str to float
        Best validation gap of every critic that was trained (first fold); a
        critic trained at several input-noise levels has one entry per level,
        ``"mlp (input_noise=0.7)"``.
    candidate_seconds : dict of str to float
        Wall time of training each of them (first fold), where ``critic="auto"``
        spends its time.
    folds : int
        Cross-fitting folds (1: one train / validation / test split).
    fold_critics : list of str
        The critic chosen in each fold.
    sampler : list of bool
        Whether x, y were samplers (fresh draws).
    input_noise, input_noise_sigma : float
        Training-input noise of the chosen critic, relative to the data's spread and in data
        units (first fold).
    ema : float
        Decay of the moving average of the critic's parameters that validation scored
        and the estimate kept (0: the raw parameters; a closed-form critic has none).
    restarts : int
        Starts tried per critic with a random initialisation (``estimate_w1``'s ``restarts``;
        by default 2 when both sides are samplers, 1 otherwise).
    start_gaps : dict of str to list of float
        With ``restarts > 1``: each start's validation gap at its first plateau, by candidate
        (first fold); the best went on through the learning-rate drops.
    """

    critic: str
    lipschitz_by_construction: bool
    max_steps: int
    batch_size: int
    lr: float
    holdout: float
    eval_every: int
    early_stop: bool
    device: str
    seed: int
    world_size: int
    sample_shape: list[int]
    candidates: dict[str, float] = field(default_factory=dict)
    candidate_seconds: dict[str, float] = field(default_factory=dict)
    folds: int = 1
    fold_critics: list[str] = field(default_factory=list)
    sampler: list[bool] = field(default_factory=lambda: [False, False])
    input_noise: float = 0.0
    input_noise_sigma: float = 0.0
    ema: float = 0.0
    restarts: int = 1
    start_gaps: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class UpperBound:
    """Exact W1 on ``repeats`` disjoint size-``m`` subsamples (:func:`wdist.exact.upper_bound`).

    ``upper = mean + t_{level, repeats-1} * sd / sqrt(repeats)`` bounds
    ``E W1(P_m, Q_m) >= W1(P, Q)`` from above with probability ``level``.
    """

    upper: float
    mean: float
    values: list[float]
    noise_floor: float
    m: int
    repeats: int
    level: float


def bracket_side_level(confidence: float) -> float:
    """One-sided level of each side of a ``confidence`` bracket: ``(1 + confidence) / 2``.

    By the union bound both sides then hold together with probability
    ``>= confidence``.
    """
    return (1 + confidence) / 2


@dataclass
class Bracket(_ReadByKey):
    """Two-sided statement about the population W1(P, Q).

    Attributes
    ----------
    lower : float
        One-sided ``(1 + confidence) / 2`` lower bound from the certified critic.
    upper : float
        One-sided ``(1 + confidence) / 2`` upper bound: mean exact W1 of
        size-m subsamples plus a Student-t margin.
    width : float
        ``upper - lower``.
    m, repeats : int
        Subsample size and number of disjoint subsamples per side.
    upper_mean : float
        Mean exact W1 over the subsamples (upper bound in expectation).
    upper_values : list of float
        The individual exact values.
    noise_floor : float
        Exact W1 between two disjoint size-m subsamples of x (population value 0).
    consistent : bool
        ``lower <= upper``; False signals a broken certificate or too few samples.
    """

    lower: float
    upper: float
    width: float
    m: int
    repeats: int
    upper_mean: float
    upper_values: list[float] = field(default_factory=list)
    noise_floor: float = float("nan")
    critic_value: float = float("nan")
    confidence: float = 0.95
    consistent: bool = True

    @classmethod
    def from_sides(cls, value: float, std_error: float, upper: UpperBound, confidence: float) -> "Bracket":
        """Join the critic's held-out gap (lower side) with an exact upper side.

        ``lower = value - z_{(1 + confidence) / 2} * std_error`` (one-sided CLT
        bound below ``E_P g - E_Q g <= W1``).  ``lower > upper`` cannot happen
        with a sound certificate and enough samples; it is reported with a
        ``RuntimeWarning`` and ``consistent=False``, never hidden.
        """
        lower = value - NormalDist().inv_cdf(bracket_side_level(confidence)) * std_error
        consistent = bool(lower <= upper.upper)
        if not consistent:
            warnings.warn(
                f"bracket: lower bound {lower:.6g} exceeds upper bound {upper.upper:.6g}: the Lipschitz "
                f"certificate is broken or the samples are too few for this confidence",
                RuntimeWarning, stacklevel=3)
        return cls(lower=lower, upper=upper.upper, width=upper.upper - lower, m=upper.m, repeats=upper.repeats,
                   upper_mean=upper.mean, upper_values=upper.values, noise_floor=upper.noise_floor,
                   critic_value=value, confidence=confidence, consistent=consistent)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        pct = round(100 * self.confidence)
        return (f"W1 in [{self.lower:.6g}, {self.upper:.6g}] ({pct}% bracket; width "
                f"{self.width:.3g}, exact on {self.repeats} x {self.m} subsamples, noise floor "
                f"{self.noise_floor:.3g})")


@dataclass
class W1Result:
    """Outcome of :func:`wdist.estimate_w1`.

    Attributes
    ----------
    value : float
        Test-split gap ``mean g(x_test) - mean g(y_test)`` of the certified
        critic ``g = f / max(1, lipschitz)``; estimates a lower bound of W1.
        With ``folds=K``: the mean over all samples, each scored by the fold
        critic that never saw it.
    lower, upper : float
        ``confidence`` CLT interval for ``E_P g - E_Q g``.
    lipschitz : float
        Certified Lipschitz bound of the trained ``f`` (float64, exact per layer;
        with folds, the largest fold critic's).
    train_value : float
        The same gap on the training split (optimistic; for diagnosis).  With
        a sampler side: the mean minibatch gap of the chosen evaluation window.
    n_train, n_validation, n_test : (int, int)
        Samples per side in each role (first fold; ``n_test`` counts all folds).
        A sampler side's ``n_train`` is the number of fresh samples its
        training drew; a chosen linear critic's, every sample of the side
        (the kept critic is set from all of them; each tenth of the test
        split was scored by one set from all the others).
    history : list of dict
        One entry per evaluation: step, train_gap (mean minibatch gap since the
        previous evaluation), val_gap, val_se, lr.
    critic : nn.Module
        The trained critic ``f`` (in eval mode, on ``device``).
    steps, best_step : int
        The chosen critic's training steps, and the step of the kept parameters.
    stopped : str
        Why its training ended: ``"converged"`` (a plateau of the validation
        gap), ``"max_steps"`` or ``"closed_form"`` (the linear critic, set
        without steps).  A candidate that ``auto`` stopped at a plateau behind
        an earlier one (``wdist.training.TRAILING_FRACTION``) ends
        ``"trailing"``; it is never the chosen critic.
    settings : EstimateSettings
        How the estimate was made.
    bracket : Bracket or None
        With ``estimate_w1(..., bracket=True)``: the two-sided bracket.
    """

    value: float
    lower: float
    upper: float
    lipschitz: float
    train_value: float
    std_error: float
    confidence: float
    history: list[dict] = field(default_factory=list)
    critic: nn.Module | None = field(default=None, repr=False)
    n_train: tuple[int, int] = (0, 0)
    n_validation: tuple[int, int] = (0, 0)
    n_test: tuple[int, int] = (0, 0)
    steps: int = 0
    best_step: int = 0
    stopped: str = ""
    seconds: float = 0.0
    settings: EstimateSettings | None = None
    bracket: Bracket | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary of everything but the critic."""
        critic, self.critic = self.critic, None  # asdict deep-copies fields: never copy the network
        try:
            d = asdict(self)
        finally:
            self.critic = critic
        d.pop("critic")
        for key in ("n_train", "n_validation", "n_test"):
            d[key] = list(d[key])
        return json.loads(json.dumps(d))

    def summary(self) -> str:
        """The parseable one-line result (plus a ``note:`` line for critics that are
        not Lipschitz-constrained by construction)."""
        pct = round(100 * self.confidence)
        line = (f"W1: {self.value:.6g}  {pct}% CI [{self.lower:.6g}, {self.upper:.6g}]  "
                f"Lipschitz <= {self.lipschitz:.6g}")
        if self.settings is not None and not self.settings.lipschitz_by_construction:
            # Baselines (ossn, wgan-gp): the value is still a valid bound, but a loose one.
            line += (f"\nnote: the {self.settings.critic} critic is not Lipschitz-constrained by "
                     f"construction; W1 is its gap divided by its measured bound {self.lipschitz:.6g}")
        return line

    def __str__(self) -> str:
        return self.summary()


@dataclass
class CrossCheck:
    """Critic versus exact OT on the same samples (:func:`wdist.crosscheck`).

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
