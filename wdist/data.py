"""Samples: tensors, arrays, Datasets and DataLoaders behind one interface.

The only module that iterates samples: the train / validation / test split
(:func:`split_indices`), the deterministic training batches
(:func:`training_batches`), critic values over a split (:func:`critic_values`),
everything in memory (:meth:`Samples.tensor`) and the float64 matrix of an
exact solve (:meth:`Samples.matrix`).

No hidden normalisation: samples are used in the caller's units, so W1 is in
the input's L2 units (for images in [0, 1] of shape C x H x W, the L2 norm of
the pixel difference over all C*H*W values).
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from . import distributed
from .cuda_options import CudaOptions

__all__ = ["Samples", "as_samples", "paired_samples", "split_indices", "Split", "training_batches", "critic_values",
           "sample_mean", "sampler_draws", "sampler_mean", "VALIDATION_FRACTION"]

#: Fraction of the non-test samples of each side used for validation.
VALIDATION_FRACTION = 0.2


class Samples:
    """A finite collection of equally shaped samples, in memory or streamed.

    Parameters
    ----------
    data : Tensor (N, ...) or map-style Dataset
    name : str
        Argument name used in error messages ("x", "y", a folder...).
    num_workers : int
        DataLoader workers for Dataset inputs.
    """

    def __init__(self, data: torch.Tensor | Dataset, name: str, num_workers: int = 0) -> None:
        self.data = data
        self.name = name
        self.num_workers = num_workers
        self.in_memory = isinstance(data, torch.Tensor)
        self.shape: tuple[int, ...] = tuple(self._first().shape)

    def __len__(self) -> int:
        return len(self.data)

    def _first(self) -> torch.Tensor:
        if self.in_memory:
            return self.data[0]
        return _to_tensor(_strip_label(self.data[0]), self.name)

    def batches(self, indices: torch.Tensor, batch_size: int, pin_memory: bool = False) -> Iterator[torch.Tensor]:
        """One pass over ``indices``, in order, in batches of samples.

        ``pin_memory``: batches in page-locked memory, so that a
        ``non_blocking`` copy to a GPU does not wait for the GPU's queued work.
        """
        if self.in_memory:
            for start in range(0, len(indices), batch_size):
                batch = self.data[indices[start : start + batch_size]]
                yield batch.pin_memory() if pin_memory else batch
            return
        loader = DataLoader(
            Subset(self.data, indices.tolist()),
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            persistent_workers=False,
            pin_memory=pin_memory,
        )
        yield from loader

    def tensor(self, progress: bool = False, desc: str = "loading samples") -> torch.Tensor:
        """Every sample stacked in memory, ``(N, ...)``, in the stored dtype (float32 for datasets)."""
        if self.in_memory:
            return self.data
        batches = tqdm(self.batches(torch.arange(len(self)), 256), desc=desc, unit="batch", leave=False,
                       total=-(-len(self) // 256), disable=None if progress else True)
        return torch.cat(list(batches))

    def matrix(self) -> np.ndarray:
        """``(N, D)`` float64 array of the flattened samples, for exact solves."""
        data = self.tensor()
        return data.reshape(len(data), -1).double().numpy()

    def _collate(self, items: Sequence) -> torch.Tensor:
        tensors = [_to_tensor(_strip_label(item), self.name) for item in items]
        for t in tensors:
            if tuple(t.shape) != self.shape:
                raise ValueError(
                    f"{self.name}: samples have different shapes {tuple(t.shape)} and {self.shape}"
                )
        batch = torch.stack(tensors)
        _check_finite(batch, self.name)
        return batch


def _strip_label(item):
    """Datasets often return (sample, label): keep the sample."""
    if isinstance(item, (tuple, list)):
        return item[0]
    return item


def _to_tensor(value, name: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise ValueError(f"{name}: unsupported dtype {value.dtype}; expected numbers")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name}: cannot convert a sample of type {type(value).__name__} to a tensor") from exc
    if value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"{name}: unsupported dtype {value.dtype}; expected real numbers")
    if dtype is None:  # keep float32 / float64 as they are, widen the rest without loss
        dtype = value.dtype if value.dtype in (torch.float32, torch.float64) else torch.float64
    return value.to(dtype)


def _check_finite(t: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten()
        raise ValueError(
            f"{name}: {len(rows)} sample(s) contain NaN or Inf (first at index {int(rows[0])})"
        )


def as_samples(obj, name: str, num_workers: int = 0, dtype: torch.dtype | None = torch.float32) -> Samples:
    """Validate and wrap a user input.

    Accepts a tensor or array of shape (N, D) (vectors), (N, H, W) (grayscale
    images, a channel axis is added) or (N, C, H, W) (images), a map-style
    ``Dataset`` (items may be ``(sample, label)``), or a ``DataLoader`` over one
    (its dataset is used; batching is wdist's).  In-memory inputs are stored
    as ``dtype`` (float32 for critics; ``None`` keeps float32 and float64
    inputs as they are and widens other numbers to float64, losslessly).

    Raises
    ------
    ValueError
        Naming ``name`` and the problem: wrong type or dtype, wrong number of
        dimensions, fewer than 2 samples, NaN/Inf values.
    """
    if isinstance(obj, DataLoader):
        obj = obj.dataset
    if isinstance(obj, (np.ndarray, torch.Tensor)) or isinstance(obj, (list, tuple)):
        t = _to_tensor(obj, name, dtype)
        if t.ndim == 3:
            t = t.unsqueeze(1)
        if t.ndim not in (2, 4):
            raise ValueError(
                f"{name}: expected shape (N, D), (N, H, W) or (N, C, H, W), got {tuple(t.shape)}"
            )
        if t.shape[0] < 2:
            raise ValueError(f"{name}: need at least 2 samples, got {t.shape[0]}")
        if t[0].numel() == 0:
            raise ValueError(f"{name}: samples are empty, shape {tuple(t.shape)}")
        _check_finite(t, name)
        return Samples(t.contiguous(), name)
    if isinstance(obj, Dataset):
        try:
            n = len(obj)
        except TypeError as exc:
            raise ValueError(f"{name}: only map-style datasets with a length are supported") from exc
        if n < 2:
            raise ValueError(f"{name}: need at least 2 samples, the dataset has {n}")
        samples = Samples(obj, name, num_workers)
        if len(samples.shape) not in (1, 3):
            raise ValueError(f"{name}: dataset samples must be (D,) or (C, H, W), got {samples.shape}")
        return samples
    raise ValueError(
        f"{name}: expected a torch tensor, numpy array, Dataset or DataLoader, got {type(obj).__name__}"
    )


def paired_samples(x, y, dtype: torch.dtype | None = torch.float32, num_workers: int = 0) -> tuple[Samples, Samples]:
    """``as_samples`` of both sides, which must have the same sample shape."""
    xs, ys = as_samples(x, "x", num_workers, dtype), as_samples(y, "y", num_workers, dtype)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y: sample shapes differ: {xs.shape} vs {ys.shape}")
    return xs, ys


@dataclass
class Split:
    """One fold's (train, validation, test) indices of one side.

    ``train`` is None for a sampler side (fresh draws), ``test`` too (drawn after training).
    """

    train: torch.Tensor | None
    val: torch.Tensor
    test: torch.Tensor | None


def split_indices(n: int, holdout: float, gen: torch.Generator, name: str, folds: int = 1,
                  max_test: int | None = None) -> list[Split]:
    """Per fold: (train, validation, test) indices of one side.

    ``folds == 1``: ``round(holdout * n)`` samples, at most ``max_test``, are the test split,
    :data:`VALIDATION_FRACTION` of the rest (at least one) the validation
    split; ``holdout == 0`` means in-sample.  ``folds == K``: cross-fitting,
    fold k tests on the k-th K-th of the samples and trains (and validates)
    on the others, so every sample is tested once, by a critic that never saw it.
    """
    perm = torch.randperm(n, generator=gen)
    if holdout == 0:
        return [Split(perm, perm, perm)]
    n_test = min(int(round(holdout * n)), max_test if max_test is not None else n)
    tests = list(torch.tensor_split(perm, folds)) if folds > 1 else [perm[n - n_test:]]
    out = []
    for k, test in enumerate(tests):
        rest = torch.cat([t for j, t in enumerate(tests) if j != k]) if folds > 1 else perm[: n - len(test)]
        n_val = max(1, int(round(VALIDATION_FRACTION * len(rest))))
        if len(test) < 2 or len(rest) <= n_val:
            raise ValueError(f"{name}: {n} samples are too few for holdout={holdout}, folds={folds} "
                             f"(need >= 2 test and >= 1 training samples per fold)")
        n_train = len(rest) - n_val
        out.append(Split(rest[:n_train], rest[n_train:], test))
    return out


def _epoch_seed(seed: int, side: int, epoch: int) -> int:
    return (seed * 1_000_003 + side * 7919 + epoch) % (2**63)


class _StepBatches:
    """Deterministic index batches for steps start, start+1, ... (drop-last epochs).

    ``batch_size`` is the global batch; each rank yields its strided share of it.
    """

    def __init__(self, indices: torch.Tensor, batch_size: int, seed: int, side: int, start: int):
        self.indices = indices
        self.batch_size = min(batch_size, len(indices))
        self.per_epoch = len(indices) // self.batch_size
        self.seed, self.side, self.step = seed, side, start
        self._epoch, self._perm = -1, indices

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        epoch, j = divmod(self.step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(_epoch_seed(self.seed, self.side, epoch))
            self._perm = self.indices[torch.randperm(len(self.indices), generator=gen)]
            self._epoch = epoch
        self.step += 1
        return distributed.share(self._perm[j * self.batch_size : (j + 1) * self.batch_size]).tolist()


def training_batches(samples: Samples, indices: torch.Tensor, batch_size: int, seed: int, side: int,
                     start: int, pin_memory: bool = False) -> tuple[Iterator[torch.Tensor], int]:
    """(this rank's batches, global batch size) for training steps ``start, start+1, ...``.

    The batch of step ``t`` is a slice of an epoch permutation drawn from a
    generator seeded by ``(seed, side, epoch)``: a run resumed at step ``t``
    sees exactly the batches of an uninterrupted run.
    """
    batches = _StepBatches(indices, batch_size, seed, side, start)
    if samples.in_memory:
        if pin_memory:
            return (samples.data[idx].pin_memory() for idx in batches), batches.batch_size
        return (samples.data[idx] for idx in batches), batches.batch_size
    loader = DataLoader(samples.data, batch_sampler=batches, num_workers=samples.num_workers,
                        collate_fn=samples._collate, pin_memory=pin_memory)
    return iter(loader), batches.batch_size


@torch.no_grad()
def sample_mean(samples: Samples, indices: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Mean of the samples at ``indices`` (float64, CPU; in a process group each rank
    reads its share and the sums are all-reduced)."""
    total = torch.zeros(samples.shape, dtype=torch.float64)
    for batch in samples.batches(distributed.share(indices), batch_size):
        total += batch.double().sum(0)
    return distributed.all_reduce_sum(total) / len(indices)


@torch.no_grad()
def sampler_draws(sampler, n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``n`` fresh draws of ``sampler``, ``batch_size`` at a time (the last call draws the rest)."""
    for start in range(0, n, batch_size):
        yield sampler(min(batch_size, n - start))


def sampler_mean(sampler, n: int, batch_size: int = 1024) -> torch.Tensor:
    """Mean of ``n`` fresh draws of ``sampler`` (float64, CPU), drawn ``batch_size`` at a time."""
    total = 0.0
    for draw in sampler_draws(sampler, n, batch_size):
        total = total + draw.double().sum(0)
    return total.cpu() / n


@torch.no_grad()
def critic_values(
    critic: nn.Module, samples: Samples, indices: torch.Tensor, batch_size: int, device: torch.device,
    progress: bool = False, desc: str = "scoring samples",
) -> torch.Tensor:
    """f(x_i) for the given indices, in eval mode (cached kernels), float64 on CPU.

    Always float32 arithmetic (never autocast): these values make the
    reported estimate, which must be the certified critic's.  They stay on
    the device until the pass ends: one copy back instead of one host sync
    per batch.
    """
    was_training = critic.training
    critic.eval()
    pin = CudaOptions.for_device(device).pin_memory
    batches = tqdm(samples.batches(indices, batch_size, pin_memory=pin), desc=desc, unit="batch", leave=False,
                   total=-(-len(indices) // batch_size), disable=None if progress else True)
    try:
        out = [torch.zeros(0, dtype=torch.float64, device=device)] + [
            critic(batch.to(device, non_blocking=True)).reshape(-1).double() for batch in batches
        ]
    finally:
        critic.train(was_training)
    return torch.cat(out).cpu()
