"""Benchmark data without a download: random 32x32 crops of scikit-learn's two photos.

``sklearn.datasets.load_sample_images`` ships ``china.jpg`` and
``flower.jpg`` (427 x 640 RGB).  Side x is crops of the first, side y crops
of the second; crops may overlap, so any n up to ~240,000 distinct positions
per photo is available.  Values are float32 in [0, 1], shape (n, 3, 32, 32):
W1 is in the L2 units of the 3072 pixel values, as for `wdist estimate`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PHOTOS = ("china.jpg", "flower.jpg")
SIZE = 32


def load_photos() -> list[np.ndarray]:
    """The two photos as (H, W, 3) uint8 arrays, china first."""
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    by_name = {Path(f).name: img for f, img in zip(data.filenames, data.images)}
    return [by_name[name] for name in PHOTOS]


def random_crops(photo: np.ndarray, n: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """``n`` random ``size x size`` crops of an (H, W, 3) uint8 image, as uint8 (n, size, size, 3)."""
    rows = rng.integers(0, photo.shape[0] - size + 1, n)
    cols = rng.integers(0, photo.shape[1] - size + 1, n)
    # A strided view of every crop position: the gather below copies only the n chosen ones.
    windows = np.lib.stride_tricks.sliding_window_view(photo, (size, size), axis=(0, 1))
    return windows[rows, cols].transpose(0, 2, 3, 1)


def crop_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): n crops of china and n of flower, float32 (n, 3, 32, 32) in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = []
    for photo in load_photos():
        crops = random_crops(photo, n, rng)
        out.append(np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255))
    return out[0], out[1]
