"""Critics, selectable by name in :func:`wdist.estimate_w1`.

Every critic is an ``nn.Sequential`` of layers that :func:`wdist.lipschitz_bound`
certifies.  Most are 1-Lipschitz by construction; the baselines ``"ossn"``
(spectral normalization of the reshaped kernel) and ``"wgan-gp"`` (gradient
penalty) are not, and are certified by their measured constant
(:func:`wdist.lipschitz.lipschitz_by_construction` tells them apart).

:data:`CRITICS` is the one registry of named critics: each :class:`CriticSpec`
says how to build the critic, whether it needs anchor samples, and its
default learning rate, so no other module special-cases a critic by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from .lipschitz import lipschitz_bound, lipschitz_by_construction
from .nn import BCOPConv2d, BjorckLinear, DistanceMin, GroupSort, InvertibleDownsample, MaxMin, OSSNConv2d, RKOConv2d

__all__ = [
    "CrossFitCritic",
    "build_critic", "check_critic_name", "auto_candidates", "CRITICS", "CriticSpec", "critic_spec",
    "bcop_critic", "rko_critic", "ossn_critic", "wgan_gp_critic", "mlp_critic", "linear_critic",
    "anchor_critic", "ridge_critic", "subspace_critic", "SUBSPACE_RANK", "SUBSPACE_MIN_DIM",
    "GradientPenaltyCritic", "lipschitz_by_construction", "DEFAULT_LR", "fit_linear_critic",
]

#: Adam learning rate of every critic that does not ask for another.
DEFAULT_LR = 1e-3


#: GroupSort group of the MLP critic.  Sorting groups of 16 instead of pairs (MaxMin) lets
#: the network bend along many directions at once, which norm-like potentials need:
#: Korotin's D=128 pairs, width 256, seed 0 -- 4 funnels with fresh samples 0.86 -> 1.00 of
#: the true W1, 256 funnels 0.52 -> 0.58; 4 funnels, 10k per side 0.48 -> 0.63.  Anil et al.
#: (ICML 2019) found the same (FullSort over MaxMin when fitting a norm).
MLP_GROUP = 16

#: GroupSort group of the convolutional critics (BCOP, RKO, OSSN): channels sorted in
#: groups of 8 instead of pairs.  The BCOP critic alone on issue 14's generator-free image
#: pairs (finite, seed 0; benchmarks/README.md): photo patches N=1 0.976 -> 0.985 of the true
#: W1, 8x8 digits 0.969 -> 0.982, photo patches N=16 deg 100 0.947 -> 0.947; groups of 4:
#: 0.981 / 0.974 / 0.950; groups of 16: 0.966 on N=1.  A sort of 8 costs what MaxMin's pass
#: costs (26 vs 28 ms of a 180 ms step); the runs are longer because they keep improving.
#: The price: a linear optimum passes the sorts less easily -- BCOP alone on a held-out
#: 1x8x8 translation 0.857 -> 0.743 (seed 0), 0.922 -> 0.808 (seed 1); ``auto``'s linear
#: candidate covers pure shifts (0.973 there).
CONV_GROUP = 8
_conv_activation = partial(GroupSort, CONV_GROUP)


def linear_critic(shape: tuple[int, ...]) -> nn.Sequential:
    """``f(x) = <u, x> + b`` with ``||u|| = 1``: optimal for translations."""
    d = _numel(shape)
    return nn.Sequential(nn.Flatten(), BjorckLinear(d, 1))


@torch.no_grad()
def fit_linear_critic(critic: nn.Sequential, mean_x: torch.Tensor, mean_y: torch.Tensor) -> None:
    """Set a :func:`linear_critic` to its exact maximiser of ``mean f(x) - mean f(y)``.

    Over unit vectors ``u``, ``<u, mean_x - mean_y>`` is largest at
    ``u = (mean_x - mean_y) / ||mean_x - mean_y||`` (Cauchy-Schwarz): the
    training objective has this closed form, which stochastic gradient steps
    only approach, in thousands of steps.  On a shift by 1.5 in d = 256 with
    5,000 samples per side and ``folds=5`` it gives 0.966 +- 0.018 of W1
    over 20 seeds: the statistical ceiling ``1 / sqrt(1 + 2 d / (m W1^2))``
    of a direction learned from m = 3,200 training samples per side.
    Equal means leave the critic as it is.
    """
    layer = critic[-1]
    diff = (mean_x - mean_y).reshape(1, -1)
    norm = float(diff.norm())
    if norm > 0:
        raw = layer.parametrizations.weight.original
        raw.copy_((diff / norm).to(raw))
        layer.bias.zero_()


def mlp_critic(shape: tuple[int, ...], width: int = 256, depth: int = 3,
               group_size: int | None = MLP_GROUP) -> nn.Sequential:
    """Björck/GroupSort MLP on flattened inputs (Anil et al., ICML 2019).

    Works on vectors and on images alike: ``nn.Flatten`` turns a (C, H, W)
    image into its C*H*W pixel values (the L2 geometry is unchanged).
    ``group_size``: units sorted together by the activation (2 is MaxMin,
    ``None`` sorts all of them, Anil et al.'s FullSort).
    """
    layers: list[nn.Module] = [nn.Flatten()]
    d = _numel(shape)
    for _ in range(depth):
        layers += [BjorckLinear(d, width), MaxMin() if group_size == 2 else GroupSort(group_size)]
        d = width
    layers.append(BjorckLinear(d, 1))
    return nn.Sequential(*layers)


#: Rank of the subspace critic (:func:`subspace_critic`): on lattices of flats in D=128
#: (10k per side, seed 0) of rank 4 / 8 / 16 a rank-16 projection gave 0.859 / 0.852 / 0.878
#: of the true W1 where the MLP gave 0.679 / 0.686 / 0.688; at rank 16, a projection to 4
#: gave 0.672 and to 32 gave 0.798 (benchmarks/README.md, "Differences in a subspace").
SUBSPACE_RANK = 16

#: ``auto`` tries the subspace critic from this many values a sample on: a projection that
#: leaves out three quarters of the directions or more, in the dimensions where the MLP's
#: statistics were measured to suffer (D=128, 256; :data:`NOISE_MIN_DIM` is the same line).
SUBSPACE_MIN_DIM = 4 * SUBSPACE_RANK


def subspace_critic(shape: tuple[int, ...], rank: int = SUBSPACE_RANK, width: int = 256, depth: int = 3,
                    group_size: int | None = MLP_GROUP) -> nn.Sequential:
    """``f(x) = g(U x)``: ``U`` has ``rank`` orthonormal rows, ``g`` is a GroupSort MLP.

    A projection onto a learned ``rank``-dimensional subspace, then any
    1-Lipschitz function of the projection.  When P and Q differ only in a
    low-dimensional subspace (the spiked transport model of Niles-Weed &
    Rigollet, Bernoulli 2022; Paty & Cuturi's subspace-robust W, ICML 2019),
    the optimal potential has this form, and W1 can be estimated at the rate of
    the subspace's dimension instead of the ambient one: the critic has
    nothing to learn, and nothing to over-fit, in the other ``D - rank``
    directions of its training split.  ``BjorckLinear(D, rank)`` keeps the
    rows orthonormal (the projection is 1-Lipschitz and passes gradient norms
    on), and ``g`` is the :func:`mlp_critic` of ``width`` units on ``rank``
    inputs, so every layer is certified.  ``rank=1`` is the ridge critic.
    """
    d = _numel(shape)
    if not 1 <= rank <= d:
        raise ValueError(f"subspace critic: rank must be between 1 and a sample's {d} values, got {rank}")
    return nn.Sequential(nn.Flatten(), BjorckLinear(d, rank), *mlp_critic((rank,), width, depth, group_size)[1:])


def ridge_critic(shape: tuple[int, ...], width: int = 64, depth: int = 3,
                 group_size: int | None = MLP_GROUP) -> nn.Sequential:
    """``f(x) = g(<u, x>)`` with ``||u|| = 1`` and ``g`` a 1-D GroupSort MLP.

    A ridge function: one learned direction, then any 1-Lipschitz profile
    along it -- the :func:`subspace_critic` of rank 1, narrower.  The optimal
    potential of a difference that lives along one direction (a shift, a
    reshaping of one marginal) has this form, and a critic restricted to it
    cannot over-fit the other ``D - 1`` directions of its training split: on a
    lattice of flats (``wdist.datasets.LatticePair``, D=128, K=1, 10k per
    side, seed 0) 0.957 of the true W1 where ``auto`` without it gave 0.569
    (the rank-16 subspace critic: 0.797).
    """
    return subspace_critic(shape, 1, width, depth, group_size)


def _conv_critic(
    shape: tuple[int, ...],
    conv: Callable[[int, int, int], nn.Module],
    activation: Callable[[], nn.Module],
    linear: Callable[[int, int], nn.Module],
    width: int,
    max_channels: int,
    head_width: int,
    kernel_size: int,
) -> list[nn.Module]:
    """Layers of the convolutional critic shared by the BCOP, RKO, OSSN and WGAN-GP critics.

    conv + activation blocks; pixel unshuffle halves the resolution (x4
    channels, orthogonal) while the spatial size is even and > 4; the channels
    double per stage up to ``max_channels``; a two-layer dense head reaches a
    scalar.  Only the layer types differ between the critics, so their
    tightness can be compared like for like.
    """
    if len(shape) != 3:
        raise ValueError(f"convolutional critic needs (C, H, W) images, got sample shape {shape}")
    channels, height, width_px = shape
    layers: list[nn.Module] = [conv(channels, width, kernel_size), activation()]
    c = width
    while height > 4 and width_px > 4 and height % 2 == 0 and width_px % 2 == 0:
        layers.append(InvertibleDownsample(2))
        height, width_px = height // 2, width_px // 2
        out = min(2 * c, max_channels)
        layers += [conv(4 * c, out, kernel_size), activation()]
        c = out
    layers += [nn.Flatten(), linear(c * height * width_px, head_width), activation(), linear(head_width, 1)]
    return layers


def bcop_critic(
    shape: tuple[int, ...],
    width: int = 32,
    max_channels: int = 256,
    head_width: int = 256,
    kernel_size: int = 3,
    activation: Callable[[], nn.Module] = _conv_activation,
) -> nn.Sequential:
    """Convolutional critic in the spirit of the BCOP paper's WDE critic.

    BCOP convolution + GroupSort blocks with pixel-unshuffle downsampling and a
    Björck/GroupSort dense head (see :func:`_conv_critic`).  Every layer is
    certified by :func:`wdist.lipschitz_bound`.  The activation sorts channels in
    groups of :data:`CONV_GROUP` (the BCOP paper used MaxMin, groups of 2); the
    widths must be multiples of it.
    """
    return nn.Sequential(*_conv_critic(shape, BCOPConv2d, activation, BjorckLinear,
                                       width, max_channels, head_width, kernel_size))


def rko_critic(shape: tuple[int, ...], width: int = 32, max_channels: int = 256, head_width: int = 256,
               kernel_size: int = 3, activation: Callable[[], nn.Module] = _conv_activation) -> nn.Sequential:
    """The BCOP critic's architecture with RKO convolutions (certified, not norm preserving)."""
    return nn.Sequential(*_conv_critic(shape, RKOConv2d, activation, BjorckLinear,
                                       width, max_channels, head_width, kernel_size))


def ossn_critic(shape: tuple[int, ...], width: int = 32, max_channels: int = 256, head_width: int = 256,
                kernel_size: int = 3, activation: Callable[[], nn.Module] = _conv_activation) -> nn.Sequential:
    """The BCOP critic's architecture with OSSN convolutions (NOT 1-Lipschitz by construction).

    Its Lipschitz constant is what :func:`wdist.lipschitz_bound` measures
    (often > 1); :func:`wdist.estimate_w1` divides the gap by it.
    """
    return nn.Sequential(*_conv_critic(shape, OSSNConv2d, activation, BjorckLinear,
                                       width, max_channels, head_width, kernel_size))


class GradientPenaltyCritic(nn.Sequential):
    """Unconstrained critic trained with a gradient penalty (WGAN-GP, Gulrajani et al., 2017).

    :meth:`penalty` is added to the loss by the trainer:
    ``lambda * E[(||grad f(x_hat)|| - 1)^2]`` at ``x_hat = e x + (1 - e) y``,
    ``e ~ U[0, 1]`` per pair.  This only *encourages* a unit gradient norm on
    the interpolates: the network is NOT Lipschitz-constrained, its certified
    constant (:func:`wdist.lipschitz_bound`, a product of layer norms) is
    usually far above 1, and the estimate divided by it is a valid but loose
    bound.

    References
    ----------
    Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. "Improved Training of
    Wasserstein GANs", NeurIPS 2017.
    """

    lipschitz_by_construction = False

    def __init__(self, *layers: nn.Module, gp_weight: float = 10.0) -> None:
        super().__init__(*layers)
        self.gp_weight = gp_weight

    def penalty(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient penalty at random interpolates of the paired rows of ``x`` and ``y``."""
        n = min(len(x), len(y))
        eps = torch.rand((n,) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        x_hat = (eps * x[:n] + (1 - eps) * y[:n]).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self(x_hat).sum(), x_hat, create_graph=True)
        return self.gp_weight * (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def wgan_gp_critic(shape: tuple[int, ...], width: int = 32, max_channels: int = 256, head_width: int = 256,
                   kernel_size: int = 3, depth: int = 3) -> GradientPenaltyCritic:
    """Plain ``nn.Conv2d``/``nn.Linear`` + LeakyReLU(0.2) critic with a gradient penalty.

    Images: the BCOP critic's shapes; vectors: a ``depth``-layer MLP of
    ``head_width`` units.  Not Lipschitz-constrained (see
    :class:`GradientPenaltyCritic`).
    """
    act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
    if len(shape) == 3:
        conv = lambda cin, cout, k: nn.Conv2d(cin, cout, k, padding="same", padding_mode="circular")  # noqa: E731
        return GradientPenaltyCritic(*_conv_critic(shape, conv, act, nn.Linear,
                                                   width, max_channels, head_width, kernel_size))
    layers: list[nn.Module] = [nn.Flatten()]
    d = _numel(shape)
    for _ in range(depth):
        layers += [nn.Linear(d, head_width), act()]
        d = head_width
    return GradientPenaltyCritic(*layers, nn.Linear(d, 1))


def anchor_critic(shape: tuple[int, ...], anchors: torch.Tensor | None = None) -> nn.Sequential:
    """Semi-dual critic ``min_j (phi_j + ||x - y_j||)`` anchored on samples of y.

    Exactly 1-Lipschitz; on the training samples it can reach the exact sample
    W1 (it is the c-transform form of the Kantorovich potential), and its gap
    on held-out samples is as valid a lower bound as any other critic's.
    """
    if anchors is None:
        raise ValueError("anchors critic needs anchor samples (estimate_w1 passes the training y)")
    return nn.Sequential(DistanceMin(anchors))


class CrossFitCritic(nn.Module):
    """Mean of the K cross-fitted critics, each divided by its certified scale.

    ``g = (1/K) sum_k f_k / max(1, L_k)`` is 1-Lipschitz (a mean of
    1-Lipschitz functions); it is the critic to apply to new data.
    """

    def __init__(self, critics: list[nn.Module], scales: list[float]) -> None:
        super().__init__()
        self.critics = nn.ModuleList(critics)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([c(x) / s for c, s in zip(self.critics, self.scales)]).mean(0)

    def lipschitz_bound(self, input_shape) -> float:
        bounds = [lipschitz_bound(c, input_shape) / float(s) for c, s in zip(self.critics, self.scales)]
        return sum(bounds) / len(bounds)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass(frozen=True)
class CriticSpec:
    """How to build one named critic.

    Attributes
    ----------
    name : str
    factory : callable
        ``factory(shape)`` (or ``factory(shape, anchors)`` when ``needs_anchors``)
        returns the critic for samples of ``shape``.
    needs_anchors : bool
        The critic is built on up to ``max_anchors`` training samples of y
        (never validation or test ones); they are part of its ``state_dict``.
    lr : float
        Default Adam learning rate.
    max_anchors : int
        Most anchor samples drawn (semi-dual critic: memory and time grow with it).
    input_noise : tuple of float
        Default training-input noise levels, relative to the data's RMS
        coordinate spread (:func:`wdist.estimate_w1`'s ``input_noise``).  With
        more than one, the critic is trained once per level and the level with
        the best *validation* gap is kept, like any other choice of ``auto``.
    batch_size : int or None
        Most the default batch per side may be (``None``: the estimator's, 256, or
        2,048 when both sides are samplers).
    fit_to_means : callable or None
        ``fit_to_means(critic, mean_x, mean_y)`` sets the critic to the exact
        maximiser of its training gap, which then depends on the training
        data through the two means only: no gradient steps are taken.
    random_start : bool
        The critic is initialised at random, so that :func:`wdist.estimate_w1`'s
        ``restarts`` can try several starts (False: its start is fixed by its data).
    """

    name: str
    factory: Callable[..., nn.Module]
    needs_anchors: bool = False
    lr: float = DEFAULT_LR
    max_anchors: int = 0
    input_noise: tuple[float, ...] = (0.0,)
    batch_size: int | None = None
    fit_to_means: Callable[[nn.Module, torch.Tensor, torch.Tensor], None] | None = None
    random_start: bool = True

    def default_noise(self, shape: tuple[int, ...]) -> tuple[float, ...]:
        """``input_noise`` levels for samples of ``shape``: the spec's from
        :data:`NOISE_MIN_DIM` dimensions on (where over-fitting was measured), else none."""
        return self.input_noise if _numel(shape) >= NOISE_MIN_DIM else (0.0,)

    def build(self, shape: tuple[int, ...], anchors: torch.Tensor | None = None) -> nn.Module:
        """The critic for samples of ``shape``."""
        return self.factory(shape, anchors) if self.needs_anchors else self.factory(shape)


#: Smallest dimension that gets a critic's default input noise.  The gains were
#: measured at D = 128 and 256; in low dimension a blur of 0.7 x the spread would
#: wash out structure a few thousand samples do resolve, and none was measured.
NOISE_MIN_DIM = 64


#: Input-noise levels of the MLP critic from :data:`NOISE_MIN_DIM` dimensions on: trained
#: at each, the best on validation kept (see its registry entry for the measurements).
MLP_NOISE_LEVELS = (0.7, 0.0)


#: Adam learning rate of the MLP critic (measurements at its registry entry).
MLP_LR = 3e-3


#: Default batch per side of the convolutional critics.
CONV_BATCH = 64


def _specs(*specs: CriticSpec) -> dict[str, CriticSpec]:
    return {spec.name: spec for spec in specs}


#: Every named critic.  The semi-dual offsets move in distance units and
#: need larger steps than the networks' weights.
CRITICS: dict[str, CriticSpec] = _specs(
    # Convolutions cost the CPU per sample (batch 256 per side: 0.66 s a step at 3x16x16,
    # batch 64: 0.22 s), and more steps of smaller batches reach the same critic: on 2 x 3,000
    # photo patches with a known W1, 0.978 in 1238 s at 256, 0.979 in 522 s at 64.
    CriticSpec("bcop", bcop_critic, batch_size=CONV_BATCH),
    # The MLP over-fits its training split in high dimension (held-out gap falling from
    # step 100 while the training gap climbs past 2x the truth); noise of 0.7 x the data's
    # spread lifted it from 0.46 to 0.55 of the true W1 on Korotin's D=128, 4-funnel pair
    # (10k per side) and from 0.55 to 0.84 on a translation in d=256 (5k per side).  On data
    # near a low-dimensional set the same blur washes out what the critic must resolve:
    # without it the MLP reaches 0.982 / 0.963 / 0.999 of the true W1 on the photo-patch and
    # digit funnels of benchmarks/known_truth.py, with it 0.962 / 0.936 / 0.975.  Neither
    # level wins everywhere (digits 0-4 vs 5-9 held out: 2.875 with it, 2.824 without), so
    # both are trained and validation keeps one.  It did not help the BCOP critic on 8x8
    # digit funnels (0.967 -> 0.962 at 0.5), hence none there.
    # lr 3e-3: on the 16-funnel photo pair, population gaps of the kept critic (20,000 fresh
    # draws a side, seeds 0-2) 0.974 -> 0.977 at noise 0 in the same time; neutral on the D=128
    # 4-funnel pair at 10k per side (0.685 -> 0.687 with the windowed plateau rule, seeds 0-5).
    CriticSpec("mlp", mlp_critic, input_noise=MLP_NOISE_LEVELS, lr=MLP_LR),
    CriticSpec("rko", rko_critic, batch_size=CONV_BATCH),
    CriticSpec("ossn", ossn_critic, batch_size=CONV_BATCH),
    # ReLU instead of GroupSort: the activation ablation of the BCOP paper (which sorted pairs, MaxMin).
    CriticSpec("bcop-relu", partial(bcop_critic, activation=nn.ReLU), batch_size=CONV_BATCH),
    CriticSpec("rko-relu", partial(rko_critic, activation=nn.ReLU), batch_size=CONV_BATCH),
    CriticSpec("ossn-relu", partial(ossn_critic, activation=nn.ReLU), batch_size=CONV_BATCH),
    CriticSpec("wgan-gp", wgan_gp_critic),
    # lr 3e-3 as the MLP's: the probe that measured 0.957 on the lattice pair (docstring).
    CriticSpec("ridge", ridge_critic, lr=MLP_LR),
    # lr 3e-3 and no input noise, as measured (the rank-16 lattice at 3e-3: 0.878, 43 s).
    CriticSpec("subspace", subspace_critic, lr=MLP_LR),
    CriticSpec("linear", linear_critic, fit_to_means=fit_linear_critic),
    # Batch 256 at most: each sample meets all 4,096 anchors, and with two samplers a batch of
    # 2,048 would make each step 8x dearer for a critic that trails the MLP there (-0.40 of the
    # true W1 on Korotin's D=128 16-funnel pair, where the MLP reaches 0.97).
    # Its offsets start at zero on its anchors: no random start for ``restarts`` to vary.
    CriticSpec("anchors", anchor_critic, needs_anchors=True, lr=1e-2, max_anchors=4096, batch_size=256,
               random_start=False),
)


def auto_candidates(shape: tuple[int, ...]) -> list[str]:
    """Critics tried by ``critic="auto"``, the best on the validation split wins.

    The expressive critic (BCOP for images, MLP for vectors) is needed for
    complex differences.  Images also get the MLP on their flattened pixels:
    local, translation-equivariant convolutions are what a blur or a noise
    artefact needs (3x16x16 photo patches against other patches, blurred /
    noisy, held out: BCOP 0.82 / 1.50, MLP 0.44 / 0.26), but differences
    tied to whole images are reached sooner and closer by the dense network
    (photo patches moved toward 16 noise images, 3 seeds at the 50 % test
    split: MLP 0.966 of the true W1 in 20 s, BCOP 0.952 in 180 s).  The linear
    critic is optimal for shifts and, being far less able to over-fit the
    training split, often generalises better in high dimension (32-d shifted
    Gaussians: 0.99 vs 0.96 of the true W1); the semi-dual anchors critic fits
    complex sample geometry that the neural critics reach only slowly (digits
    0-4 vs 5-9 in-sample: 0.9999 of the exact W1, against 0.80 for a 512-wide
    MLP after 1000 full-batch steps).  Vectors also get the ridge critic
    (:func:`ridge_critic`), for differences carried by one direction: on a
    lattice of flats in D=128 at 10k per side it lifts ``auto`` from 0.569 to
    0.957 of the true W1, and where the MLP is needed it trails at its first
    plateau and stops (5-14 s on the funnel and lattice pairs).  From
    :data:`SUBSPACE_MIN_DIM` values a sample on they also get the subspace
    critic (:func:`subspace_critic`, rank 16), for differences carried by a few
    directions: on lattices of flats in D=128 of rank 4 and 16 it lifts
    ``auto`` from the MLP's 0.679 / 0.688 to 0.859 / 0.878 of the true W1 at
    10k per side, and on the 4-funnel pair, where the MLP is needed, it trails
    and stops after 16 s.  The linear critic, refit on every other sample at
    test time, is kept unless another beats its validation gap by a standard
    error (``estimator._choose``).
    """
    if len(shape) == 3:
        return ["bcop", "mlp", "linear", "anchors"]
    subspace = ["subspace"] if _numel(shape) >= SUBSPACE_MIN_DIM else []
    return ["mlp", "ridge", *subspace, "linear", "anchors"]


def check_critic_name(name: str) -> None:
    """Raise ``ValueError`` naming the choices for an unknown critic name."""
    if name not in CRITICS:
        raise ValueError(f"critic: unknown name {name!r}; choose from 'auto', {', '.join(map(repr, CRITICS))}")


def critic_spec(name: str) -> CriticSpec:
    """The registry entry of ``name`` (``ValueError`` naming the choices if unknown)."""
    check_critic_name(name)
    return CRITICS[name]


def build_critic(name: str, shape: tuple[int, ...], anchors: torch.Tensor | None = None) -> nn.Module:
    """Critic ``name`` for samples of ``shape`` (``anchors``: for critics that need them)."""
    return critic_spec(name).build(shape, anchors)
