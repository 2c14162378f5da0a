"""Input handling: tensors, arrays, Datasets and DataLoaders behind one interface.

No hidden normalisation: samples are used in the caller's units, so W1 is in
the input's L2 units (for images in [0, 1] of shape C x H x W, the L2 norm of
the pixel difference over all C*H*W values).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["Samples", "as_samples"]


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


def _to_tensor(value, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
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
    return value.to(dtype)


def _check_finite(t: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten()
        raise ValueError(
            f"{name}: {len(rows)} sample(s) contain NaN or Inf (first at index {int(rows[0])})"
        )


def as_samples(obj, name: str, num_workers: int = 0, dtype: torch.dtype = torch.float32) -> Samples:
    """Validate and wrap a user input.

    Accepts a tensor or array of shape (N, D) (vectors), (N, H, W) (grayscale
    images, a channel axis is added) or (N, C, H, W) (images), a map-style
    ``Dataset`` (items may be ``(sample, label)``), or a ``DataLoader`` over one
    (its dataset is used; batching is wdist's).  In-memory inputs are stored
    as ``dtype`` (float64 for exact solves, float32 for critics).

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
