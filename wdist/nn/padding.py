"""Circular padding with a cheap backward.

``F.pad(x, ..., mode="circular")`` is differentiated through its slicing
decomposition: every slice's backward allocates and zero-fills a gradient the
size of the whole input, which made padding the largest cost of a
convolutional critic's step after the convolutions themselves (torch 2.13,
CPU).  Here the backward folds the padded border back onto the input with
two copies and four small additions.
"""

from __future__ import annotations

import torch

__all__ = ["circular_pad"]


class _CircularPad2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
        *lead, h, w = x.shape
        out = x.new_empty(*lead, top + h + bottom, left + w + right)
        out[..., top : top + h, left : left + w] = x
        # Rows first, then whole columns of the row-padded block (corners wrap both ways).
        out[..., :top, left : left + w] = x[..., h - top :, :]
        out[..., top + h :, left : left + w] = x[..., :bottom, :]
        out[..., :, :left] = out[..., :, w : w + left]
        out[..., :, left + w :] = out[..., :, left : left + right]
        ctx.pads = (left, right, top, bottom)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        left, right, top, bottom = ctx.pads
        h = grad.shape[-2] - top - bottom
        w = grad.shape[-1] - left - right
        cols = grad[..., :, left : left + w].clone()  # undo the column step
        cols[..., :, w - left :] += grad[..., :, :left]
        cols[..., :, :right] += grad[..., :, left + w :]
        rows = cols[..., top : top + h, :].clone()  # then the row step
        rows[..., h - top :, :] += cols[..., :top, :]
        rows[..., :bottom, :] += cols[..., top + h :, :]
        return rows, None, None, None, None


def circular_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Same result as ``F.pad(x, pad, mode="circular")`` for ``pad = (left, right, top, bottom)``.

    Each padding amount must not exceed the input size along its axis.
    Differentiable (also twice: the backward uses differentiable indexing).
    """
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    if max(top, bottom) > h or max(left, right) > w:
        raise ValueError(f"circular padding {pad} larger than the input's {h}x{w}")
    return _CircularPad2d.apply(x, left, right, top, bottom)
