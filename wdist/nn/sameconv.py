"""Base class of the constrained convolutions: stride 1, output the input's size."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .cache import CachedParametrization
from .padding import circular_pad

__all__ = ["SameConv2d"]


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``padding="same"``, circular or zero padded, validated arguments.

    Circular padding goes through :func:`wdist.nn.circular_pad` (same values as
    torch's, backward 4x cheaper).  Even kernel sizes pad asymmetrically, as
    ``padding="same"`` does.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True, padding: str = "circular"
    ) -> None:
        if padding not in ("circular", "zeros"):
            raise ValueError(f"padding must be 'circular' or 'zeros', got {padding!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be an int >= 1, got {kernel_size!r}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError("in_channels and out_channels must be >= 1")
        super().__init__(in_channels, out_channels, kernel_size, padding="same", padding_mode=padding, bias=bias)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "circular":
            return super()._conv_forward(input, weight, bias)
        padded = circular_pad(input, tuple(self._reversed_padding_repeated_twice))
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)

    def constrain_kernel_(
        self,
        builder: Callable[[torch.Tensor], CachedParametrization],
        free: torch.Tensor | None = None,
        *,
        unsafe: bool = False,
    ) -> None:
        """Start the layer and parametrize its kernel: the one constructor step of every constrained conv.

        The free tensor is ``free`` when given (e.g. BCOP's stack of
        matrices, ``unsafe=True`` since the kernel has another shape),
        otherwise the kernel with an orthogonal reshaped (out, in*k*k) matrix,
        the usual start of a Lipschitz layer; the bias starts at zero; then
        ``builder(free)`` becomes the kernel's parametrization.
        """
        with torch.no_grad():
            if free is None:
                nn.init.orthogonal_(self.weight.view(self.out_channels, -1))
            else:
                del self.weight
                self.weight = nn.Parameter(free)
            if self.bias is not None:
                nn.init.zeros_(self.bias)
        builder(self.weight.detach()).register(self, unsafe=unsafe)
