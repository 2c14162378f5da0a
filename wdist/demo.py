"""``wdist demo``: the whole folder pipeline on photos shipped with scikit-learn.

``sklearn.datasets.load_sample_images`` installs two photos (``china.jpg``
and ``flower.jpg``, 427 x 640 RGB); random non-overlapping 16 x 16 patches of
each are written as two folders of PNGs, which are then estimated through
exactly the code path of ``wdist estimate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .folders import LoadOptions, Log, TrainOptions, estimate_folders
from .report import OutputFiles

__all__ = ["DemoPlan", "FULL", "QUICK", "cut_patches", "write_demo_folders", "run_demo"]

DEMO_PHOTOS = ("china.jpg", "flower.jpg")


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run."""

    patches: int  # per folder
    patch_size: int
    steps: int
    seed: int = 0


#: ``make demo``: about two minutes on 2 CPU cores.
FULL = DemoPlan(patches=300, patch_size=16, steps=300)
#: ``--quick``: a smoke test of a few seconds.
QUICK = DemoPlan(patches=48, patch_size=16, steps=30)


def cut_patches(image: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random non-overlapping ``size x size`` patches of an ``(H, W, C)`` image."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    if n > rows * cols:
        raise ValueError(f"patches: {n} requested but the image holds only {rows * cols} of {size}x{size}")
    cells = rng.choice(rows * cols, size=n, replace=False)
    return [image[r * size:(r + 1) * size, c * size:(c + 1) * size] for r, c in (divmod(int(i), cols) for i in cells)]


def _clear_patches(folder: Path) -> None:
    for old in folder.glob("patch_*.png"):
        old.unlink()


def write_demo_folders(out: Path, plan: DemoPlan) -> tuple[Path, Path]:
    """Write the patches of both photos as PNG folders ``out/china`` and ``out/flower``."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    by_name = {Path(f).name: img for f, img in zip(photos.filenames, photos.images)}
    rng = np.random.default_rng(plan.seed)
    folders = []
    for name in DEMO_PHOTOS:
        folder = Path(out) / Path(name).stem
        folder.mkdir(parents=True, exist_ok=True)
        _clear_patches(folder)
        for i, patch in enumerate(cut_patches(by_name[name], plan.patches, plan.patch_size, rng)):
            Image.fromarray(patch).save(folder / f"patch_{i:04d}.png")
        folders.append(folder)
    return folders[0], folders[1]


def run_demo(out: str | Path, *, quick: bool = False, device: str = "auto", quiet: bool = False):
    """Write the demo folders under ``out``, estimate W1 between them, write the outputs.

    Returns
    -------
    W1Result
    """
    plan = QUICK if quick else FULL
    out = Path(out)
    log = Log(quiet)
    dir_a, dir_b = write_demo_folders(out, plan)
    p = plan.patch_size
    log.info(f"demo: cut {plan.patches} random {p}x{p} RGB patches from each of scikit-learn's sample "
             f"photos {DEMO_PHOTOS[0]} and {DEMO_PHOTOS[1]} into {dir_a} and {dir_b}")
    log.info(f"demo: same as  wdist estimate {dir_a} {dir_b} --steps {plan.steps} --seed {plan.seed} "
             f"--save-critic {out / 'critic.safetensors'} --report {out}")
    train = TrainOptions(steps=plan.steps, seed=plan.seed, device=device)
    outputs = OutputFiles(save_critic=out / "critic.safetensors", report=out)
    return estimate_folders(dir_a, dir_b, LoadOptions(quiet=quiet), train, outputs, command="demo")
