"""Sampler inputs: distributions that can be sampled at will (a generative model).

With a sampler, :func:`wdist.estimate_w1` never reuses a sample: every
training batch is drawn fresh, the validation set is drawn once before
training, and the test set is drawn after training, so the critic has never
seen a test sample and the confidence interval stays honest.  The critic then
cannot over-fit a finite training split: the gap is limited by optimisation
and capacity only (the regime of Korotin et al., 2022).

Accepted: a callable ``sampler(n) -> Tensor`` of shape ``(n, *sample_shape)``
(or an ndarray), or an ``IterableDataset`` whose items are single samples
(or ``(sample, label)`` pairs).  Every draw is checked: shape, dtype and
finiteness, with a ``ValueError`` naming the side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch.utils.data import IterableDataset

__all__ = ["SamplerSource", "is_sampler", "as_sampler"]


def is_sampler(obj) -> bool:
    """True for inputs that are drawn from rather than indexed: callables and IterableDatasets."""
    return isinstance(obj, IterableDataset) or (callable(obj) and not isinstance(obj, (torch.Tensor, np.ndarray))
                                               and not hasattr(obj, "__getitem__"))


class SamplerSource:
    """Validated fresh draws of one side.

    Parameters
    ----------
    draw : callable
        ``n -> (n, *shape)`` samples.
    name : str
        The argument's name in error messages ("x" or "y").
    """

    def __init__(self, draw: Callable[[int], object], name: str) -> None:
        self._draw, self.name = draw, name
        self.drawn = 0
        first = self._convert(draw(2), 2)
        self._blas = foreign_blas()  # after a first draw: the libraries the sampler loads are loaded
        shape = tuple(first.shape[1:])
        if len(shape) == 2:  # (n, H, W): one channel, as for tensors
            shape = (1, *shape)
        if len(shape) not in (1, 3):
            raise ValueError(f"{name}: the sampler's samples must be (D,), (H, W) or (C, H, W), got {shape}")
        self.shape: tuple[int, ...] = shape

    def __call__(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """``n`` fresh samples, float32 ``(n, *shape)``, on the CPU or, see below, ``device``.

        ``device``: draws the sampler hands out on this device stay there (a
        generative model on the GPU that trains the critic: no round trip
        through host memory at every training batch); others come to the CPU.
        """
        with self._blas.limit(limits=1):
            drawn = self._draw(n)
        batch = self._convert(drawn, n, device).reshape(n, *self.shape)
        self.drawn += n
        return batch

    def _convert(self, value, n: int, device: torch.device | None = None) -> torch.Tensor:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{self.name}: the sampler returned {type(value).__name__}, expected a tensor of "
                             f"{n} samples")
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{self.name}: the sampler returned dtype {value.dtype}; expected real numbers")
        if value.ndim < 2 or value.shape[0] != n:
            raise ValueError(f"{self.name}: the sampler was asked for {n} samples and returned shape "
                             f"{tuple(value.shape)}")
        if hasattr(self, "shape") and value[0].numel() != int(np.prod(self.shape)):
            raise ValueError(f"{self.name}: the sampler returned samples of shape {tuple(value.shape[1:])}, "
                             f"earlier {self.shape}")
        keep = device is not None and _same_device(value.device, torch.device(device))
        value = value.detach().to(value.device if keep else "cpu", torch.float32)
        bad = ~torch.isfinite(value)
        if bad.any():
            first = int(bad.flatten(1).any(1).nonzero()[0])
            raise ValueError(f"{self.name}: the sampler returned NaN or Inf (sample {first} of a draw of {n})")
        return value


def foreign_blas() -> ThreadpoolController:
    """The BLAS libraries loaded in this process other than torch's own (numpy's, scipy's).

    A sampler's draws run with these at one thread (:meth:`SamplerSource.__call__`).
    After a call, an idle OpenBLAS or MKL worker keeps spinning for up to about 0.1 s
    before it sleeps, and between draws the cores belong to torch's training step: with
    numpy's OpenBLAS at two threads on two cores, a step of the MLP critic on Korotin's
    D=128 funnel samplers (numpy, ``benchmarks/known_truth.py``; 200 steps, validation
    and test draws included) cost 193 ms instead of 96 ms (4 funnels) and 210 ms instead
    of 148 ms (256 funnels), while the draws themselves took half the time or about the
    same on one thread (1.8 s against 3.6 s, 10.8 s against 10.6 s of the 200 steps).  The limit holds
    during a draw only, so torch's training step never runs under it, even where torch
    shares a BLAS library (a conda build; there a torch sampler on the CPU would draw
    with one BLAS thread).  ``threadpoolctl`` (scikit-learn's tool against the same
    oversubscription) finds and sets the libraries, whatever their vendor.
    """
    torch_dirs = [Path(torch.__file__).resolve().parent]
    torch_dirs.append(torch_dirs[0].with_name("torch.libs"))  # vendored by auditwheel
    blas = ThreadpoolController().select(user_api="blas")
    foreign = [c.filepath for c in blas.lib_controllers
               if not any(Path(c.filepath).resolve().is_relative_to(d) for d in torch_dirs)]
    return blas.select(filepath=foreign)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda:0`` is ``cuda`` when 0 is the current device (an estimator given ``"cuda"``)."""
    if a.type != b.type:
        return False
    if a.index == b.index or a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def _iterable_draw(dataset: IterableDataset, name: str) -> Callable[[int], torch.Tensor]:
    iterator: Iterator = iter(dataset)

    def draw(n: int) -> torch.Tensor:
        items = []
        for _ in range(n):
            try:
                item = next(iterator)
            except StopIteration:
                raise ValueError(f"{name}: the IterableDataset ended after {len(items)} of {n} requested "
                                 f"samples; a sampler input must be able to draw as many as needed") from None
            items.append(item[0] if isinstance(item, (tuple, list)) else item)
        return torch.stack([torch.as_tensor(np.asarray(i)) if not isinstance(i, torch.Tensor) else i
                            for i in items])
    return draw


def as_sampler(obj, name: str) -> SamplerSource:
    """Wrap a callable or an ``IterableDataset`` as a :class:`SamplerSource`."""
    if isinstance(obj, IterableDataset):
        return SamplerSource(_iterable_draw(obj, name), name)
    return SamplerSource(obj, name)
