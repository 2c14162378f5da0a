"""Certified upper bounds on the L2 Lipschitz constant of a critic.

For a composition ``f = f_L o ... o f_1``, ``Lip(f) <= prod_i Lip(f_i)``.
Each factor is the *exact* operator norm of the layer as its weights are now
(not as the parametrization intends them to be), computed in float64:

* dense layers: largest singular value (SVD);
* convolutions: a circular convolution on an n1 x n2 grid is block-diagonalised
  by the 2-D DFT, so its norm is the largest singular value of the kernel's
  Fourier symbol over the n1*n2 frequencies (Sedghi, Gupta, Long, ICLR 2019).
  A zero-padded convolution is a crop of the circular convolution over the
  padded grid, so that grid's value bounds it; a stride only subsamples the
  output and cannot increase the norm;
* sorting activations, pixel unshuffle, flatten: permutations, norm 1.

Layers of unknown type raise :class:`TypeError` instead of being assumed
1-Lipschitz.  Other types can be added with :func:`register_lipschitz`.

The certification protocols, declared here and nowhere else:

* :class:`SelfCertified`: a module with ``lipschitz_bound(input_shape) -> float``
  certifies itself (e.g. :class:`wdist.nn.DistanceMin`);
* :class:`DeclaresConstruction`: a module with ``lipschitz_by_construction =
  False`` is certified only by its measured constant, not by design (OSSN,
  WGAN-GP); :func:`lipschitz_by_construction` reads it;
* :class:`Penalized`: a critic with ``penalty(x, y) -> Tensor`` has it added to
  the training loss (WGAN-GP's gradient penalty); :func:`training_penalty` finds it.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from .nn.activations import GroupSort

__all__ = ["lipschitz_bound", "register_lipschitz", "conv2d_operator_norm", "linear_operator_norm",
           "SelfCertified", "DeclaresConstruction", "Penalized", "lipschitz_by_construction",
           "training_penalty"]

Shape = tuple[int, ...]
_RULES: list[tuple[type, Callable[[nn.Module, Shape], float]]] = []


@runtime_checkable
class SelfCertified(Protocol):
    """A layer that states its own certified L2 Lipschitz bound for inputs of ``input_shape``."""

    def lipschitz_bound(self, input_shape: Shape) -> float: ...


@runtime_checkable
class DeclaresConstruction(Protocol):
    """A module that says whether it is 1-Lipschitz by design (False: only measured)."""

    lipschitz_by_construction: bool


@runtime_checkable
class Penalized(Protocol):
    """A critic whose training loss adds ``penalty(x, y)`` (a scalar tensor)."""

    def penalty(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def lipschitz_by_construction(critic: nn.Module) -> bool:
    """False when any part of ``critic`` declares ``lipschitz_by_construction = False``.

    Such critics (OSSN, WGAN-GP) are still certified *after* training by
    :func:`lipschitz_bound`; their bound is just not 1 by design.
    """
    return all(m.lipschitz_by_construction for m in critic.modules() if isinstance(m, DeclaresConstruction))


def training_penalty(critic: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The critic's ``penalty(x, y)`` to add to the training loss, or None."""
    return critic.penalty if isinstance(critic, Penalized) and callable(critic.penalty) else None


def register_lipschitz(*types: type) -> Callable:
    """Decorator: ``fn(module, input_shape) -> float`` certifies modules of ``types``.

    ``input_shape`` excludes the batch dimension.  Later registrations win.
    """

    def decorate(fn: Callable[[nn.Module, Shape], float]) -> Callable:
        for t in types:
            _RULES.insert(0, (t, fn))
        return fn

    return decorate


def linear_operator_norm(weight: torch.Tensor) -> float:
    """Exact spectral norm of a dense weight, in float64."""
    return float(torch.linalg.matrix_norm(weight.detach().double().cpu(), ord=2))


def _dilate(kernel: torch.Tensor, dilation: Sequence[int]) -> torch.Tensor:
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return kernel
    out_c, in_c, kh, kw = kernel.shape
    big = kernel.new_zeros(out_c, in_c, (kh - 1) * dh + 1, (kw - 1) * dw + 1)
    big[:, :, ::dh, ::dw] = kernel
    return big


def _wrap(kernel: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Fold kernel taps modulo the grid size (a kernel larger than the grid wraps)."""
    n1, n2 = size
    out_c, in_c, kh, kw = kernel.shape
    if kh <= n1 and kw <= n2:
        return kernel
    folded = kernel.new_zeros(out_c, in_c, min(kh, n1), min(kw, n2))
    for a in range(kh):
        for b in range(kw):
            folded[:, :, a % n1, b % n2] += kernel[:, :, a, b]
    return folded


def conv2d_operator_norm(weight: torch.Tensor, grid: Sequence[int], groups: int = 1) -> float:
    """Exact L2 operator norm of the circular convolution with ``weight`` on ``grid``.

    Parameters
    ----------
    weight : Tensor (out, in/groups, kh, kw)
    grid : (n1, n2) spatial size of the (padded) input.
    groups : int

    Notes
    -----
    The symbol of a real kernel is conjugate-symmetric, so the half-spectrum
    of ``rfft2`` already contains every singular value.
    """
    w = _wrap(weight.detach().double().cpu(), grid)
    symbol = torch.fft.rfft2(w, s=tuple(grid))  # (out, in_g, n1, n2//2+1)
    out_c = w.shape[0]
    per_group = out_c // groups
    best = 0.0
    for g in range(groups):
        block = symbol[g * per_group : (g + 1) * per_group].permute(2, 3, 0, 1)
        best = max(best, float(torch.linalg.matrix_norm(block, ord=2).max()))
    return best


@register_lipschitz(nn.Conv2d)
def _conv2d_bound(conv: nn.Conv2d, input_shape: Shape) -> float:
    if len(input_shape) != 3:
        raise ValueError(f"{type(conv).__name__} expects (C, H, W) input, got shape {input_shape}")
    kernel = _dilate(conv.weight, conv.dilation)
    kh, kw = kernel.shape[-2:]
    pads = _padding_amounts(conv, (kh, kw))
    h, w = input_shape[1:]
    if conv.padding_mode == "zeros":
        grid = (h + pads[0], w + pads[1])
    elif conv.padding_mode == "circular":
        if pads[0] > kh - 1 or pads[1] > kw - 1:
            raise TypeError(
                f"cannot certify circular {type(conv).__name__} with padding {conv.padding} wider "
                f"than kernel_size - 1: it duplicates input pixels"
            )
        grid = (h, w)
    else:
        raise TypeError(
            f"cannot certify {type(conv).__name__} with padding_mode={conv.padding_mode!r} "
            f"(supported: 'zeros', 'circular')"
        )
    return conv2d_operator_norm(kernel, grid, conv.groups)


def _padding_amounts(conv: nn.Conv2d, kernel_hw: tuple[int, int]) -> tuple[int, int]:
    """Total padding (both sides) along H and W."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        return (kernel_hw[0] - 1, kernel_hw[1] - 1)
    return (2 * conv.padding[0], 2 * conv.padding[1])


@register_lipschitz(nn.Linear)
def _linear_bound(linear: nn.Linear, input_shape: Shape) -> float:
    return linear_operator_norm(linear.weight)


@register_lipschitz(GroupSort, nn.PixelUnshuffle, nn.Flatten, nn.Identity)
def _permutation_bound(module: nn.Module, input_shape: Shape) -> float:
    return 1.0


@register_lipschitz(nn.ReLU, nn.Tanh)
def _contractive_activation_bound(module: nn.Module, input_shape: Shape) -> float:
    return 1.0


@register_lipschitz(nn.LeakyReLU)
def _leaky_relu_bound(module: nn.LeakyReLU, input_shape: Shape) -> float:
    return max(1.0, abs(module.negative_slope))


def _output_shape(module: nn.Module, input_shape: Shape, like: torch.Tensor | None) -> Shape:
    """Shape after ``module`` (no batch dim), by one forward pass on zeros."""
    dtype = like.dtype if like is not None else torch.float32
    device = like.device if like is not None else "cpu"
    was_training = module.training
    module.eval()  # no kernel rebuild, no dropout/batch statistics
    try:
        with torch.no_grad():
            out = module(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        module.train(was_training)
    return tuple(out.shape[1:])


def _first_parameter(module: nn.Module) -> torch.Tensor | None:
    return next(iter(module.parameters()), None)


def _module_bound(module: nn.Module, input_shape: Shape, name: str) -> tuple[float, Shape]:
    """(bound, output_shape) for one module."""
    if isinstance(module, nn.Sequential):
        total = 1.0
        shape = input_shape
        for child_name, child in module.named_children():
            factor, shape = _module_bound(child, shape, f"{name}.{child_name}" if name else child_name)
            total *= factor
        return total, shape
    if isinstance(module, SelfCertified) and callable(module.lipschitz_bound):
        factor = float(module.lipschitz_bound(input_shape))
    else:
        rule = next((fn for t, fn in _RULES if isinstance(module, t)), None)
        if rule is None:
            raise TypeError(
                f"lipschitz_bound cannot certify layer {name or '<root>'} of type "
                f"{type(module).__name__}; use wdist.nn layers, nn.Sequential, or register a rule "
                f"with wdist.lipschitz.register_lipschitz"
            )
        factor = float(rule(module, input_shape))
    return factor, _output_shape(module, input_shape, _first_parameter(module))


def lipschitz_bound(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Certified upper bound on the L2 Lipschitz constant of ``model``.

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` (nested allowed) of supported layers, or a single
        supported layer.
    input_shape : sequence of int
        Shape of one input without the batch dimension, e.g. ``(3, 32, 32)``
        or ``(64,)``.  Convolution norms depend on the spatial size.

    Returns
    -------
    float
        ``prod_i ||layer_i||_2`` with each factor exact in float64 for the weights
        as they are.  Equals the true constant when the layers' worst-case
        directions align (e.g. a chain of isometries).

    Raises
    ------
    TypeError
        For a layer that cannot be certified.
    """
    shape = tuple(int(s) for s in input_shape)
    bound, _ = _module_bound(model, shape, "")
    return bound
