"""The folder pipelines behind the command line (and ``wdist demo``).

Each pipeline indexes and validates folders of images (:mod:`wdist.images`),
runs the library (estimate, exact, crosscheck, score), prints the results
and writes the files asked for (:mod:`wdist.report`).  Nothing here parses
command-line arguments: :mod:`wdist.cli` maps its options onto
:class:`LoadOptions` and :class:`TrainOptions` and translates the library's
argument names in error messages into its flags.

Standard output carries the results (the parseable line first); notes and
warnings go to standard error.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Iterator, Sequence

import click
import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import preflight
from .checks import crosscheck
from .data import Samples
from .estimator import DEFAULT_HOLDOUT, estimate_w1, resolve_device
from .exact import check_size, exact_memory_bytes, exact_w1
from .images import DEFAULT_MAX_PIXELS, FolderIndex, ImageFolder, index_folder
from .report import (OutputFiles, WitnessRow, certified_scores, command_payload, human_summary, load_critic,
                     witness_rows, write_json, write_outputs)
from .results import CrossCheck, W1Result
from .training import gap_statistics

__all__ = ["LoadOptions", "TrainOptions", "Log", "Inputs", "load_inputs", "estimate_folders", "exact_folders",
           "crosscheck_folders", "score_folders", "crosscheck_table", "spinner"]


class Log:
    """Notes to stderr (silenced by ``quiet``), warnings always, results to stdout.

    ``muted``: say nothing at all (ranks other than 0 of a torchrun job).
    """

    def __init__(self, quiet: bool = False, muted: bool = False) -> None:
        self.quiet = quiet or muted
        self.muted = muted

    def info(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    def warn(self, message: str) -> None:
        if not self.muted:
            click.echo(f"Warning: {message}", err=True)

    def result(self, message: str, always: bool = False) -> None:
        if (always and not self.muted) or not self.quiet:
            click.echo(message)


@contextmanager
def spinner(desc: str, enabled: bool) -> Iterator[None]:
    """A tqdm bar showing the elapsed time of one long call (no finer progress exists)."""
    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed}", leave=False,
               disable=None if enabled else True)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    thread = None
    if not bar.disable:
        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        bar.close()


@dataclass
class LoadOptions:
    """How folders become tensors (see the module docstring of :mod:`wdist.images`)."""

    size: tuple[int, int] | None = None
    center_crop: bool = False
    grayscale: bool = False
    recursive: bool = False
    skip_bad_images: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_workers: int = 0
    quiet: bool = False


@dataclass
class TrainOptions:
    """Arguments passed on to :func:`wdist.estimate_w1`."""

    steps: int | None = None
    batch_size: int | None = None
    critic: str = "auto"
    device: str = "auto"
    seed: int = 0
    holdout: float = DEFAULT_HOLDOUT
    confidence: float = 0.95
    eval_every: int | None = None
    checkpoint: Path | None = None
    checkpoint_every: int | None = None
    resume: bool = False
    bracket: bool = False
    folds: int = 1
    input_noise: float | None = None
    restarts: int = 1


# ------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Both folders, indexed, validated and wrapped as datasets."""

    dir_a: Path
    dir_b: Path
    index_a: FolderIndex
    index_b: FolderIndex
    data_a: ImageFolder
    data_b: ImageFolder
    size_rule: str
    options: LoadOptions

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data_a.shape

    def describe(self) -> dict:
        """JSON-safe description for ``--json`` and reports."""
        o = self.options
        return {
            "dir_a": str(self.dir_a), "dir_b": str(self.dir_b),
            "dir_a_resolved": str(self.dir_a.resolve()), "dir_b_resolved": str(self.dir_b.resolve()),
            "n_a": len(self.index_a), "n_b": len(self.index_b),
            "skipped_a": self.index_a.skipped, "skipped_b": self.index_b.skipped,
            "resized_a": _count_resized(self.index_a, self.data_a.size),
            "resized_b": _count_resized(self.index_b, self.data_b.size),
            "image_shape": list(self.shape), "mode": "L" if o.grayscale else "RGB",
            "size": list(self.data_a.size), "size_rule": self.size_rule, "center_crop": o.center_crop,
            "resample": "LANCZOS", "recursive": o.recursive, "max_pixels": o.max_pixels,
            "pixel_range": [0.0, 1.0],
        }

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both folders in memory (float32), with a progress bar."""
        return tuple(Samples(data, label, self.options.num_workers).tensor(not self.options.quiet,
                                                                           f"loading {label} images")
                     for label, data in (("A", self.data_a), ("B", self.data_b)))


def _count_resized(index: FolderIndex, size: tuple[int, int]) -> int:
    return sum(1 for s in index.sizes if tuple(s) != tuple(size))


def _index(directory: Path, label: str, opts: LoadOptions, log: Log) -> FolderIndex:
    index = index_folder(directory, recursive=opts.recursive, skip_bad=opts.skip_bad_images,
                         max_pixels=opts.max_pixels, num_workers=opts.num_workers,
                         progress=not opts.quiet, desc=f"checking {label} images")
    for reason in index.skipped:
        log.warn(f"skipped {reason}")
    if len(index) < 2:
        raise ValueError(f"{label} {directory}: need at least 2 images, found {len(index)}")
    return index


def _dataset(index: FolderIndex, size: tuple[int, int], opts: LoadOptions) -> ImageFolder:
    if size[0] * size[1] > opts.max_pixels:
        raise ValueError(f"size: {size[0]}x{size[1]} exceeds max_pixels {opts.max_pixels}")
    return ImageFolder(index.paths, size, opts.grayscale, opts.center_crop, opts.max_pixels)


def load_inputs(dir_a: Path, dir_b: Path, opts: LoadOptions, log: Log) -> Inputs:
    """Index and validate both folders, choose the common size, build the datasets."""
    index_a = _index(Path(dir_a), "DIR_A", opts, log)
    same = Path(dir_a).resolve() == Path(dir_b).resolve()
    index_b = index_a if same else _index(Path(dir_b), "DIR_B", opts, log)
    if same:
        log.info("note: DIR_A and DIR_B are the same folder, so W1 is 0 (expect an estimate near 0)")
    size, rule = (opts.size, "--size") if opts.size else (index_a.sizes[0], f"size of {index_a.paths[0]}")
    data_a, data_b = _dataset(index_a, size, opts), _dataset(index_b, size, opts)
    inputs = Inputs(Path(dir_a), Path(dir_b), index_a, index_b, data_a, data_b, rule, opts)
    _log_inputs(inputs, log)
    return inputs


def _log_inputs(inputs: Inputs, log: Log) -> None:
    d = inputs.describe()
    c, h, w = inputs.shape
    log.info(f"DIR_A {d['dir_a']}: {d['n_a']} images; DIR_B {d['dir_b']}: {d['n_b']} images; "
             f"compared as {c}x{h}x{w} {d['mode']} in [0, 1] ({d['size_rule']})")
    resized = d["resized_a"] + d["resized_b"]
    if resized:
        how = "center-cropped and resized" if d["center_crop"] else "resized (stretched)"
        log.info(f"{resized} image(s) {how} to {h}x{w} with LANCZOS")


def _witnesses(result: W1Result, inputs: Inputs, k: int = 8) -> list[WitnessRow]:
    """Top/bottom-scored images of both folders (rows for :func:`wdist.report.plot_witness_grid`)."""
    rows = []
    for side, data, index in (("A", inputs.data_a, inputs.index_a), ("B", inputs.data_b, inputs.index_b)):
        scores = certified_scores(result.critic, data, lipschitz=result.lipschitz, device=result.settings.device,
                                  num_workers=inputs.options.num_workers, progress=not inputs.options.quiet,
                                  desc=f"scoring {side} images")
        names = [str(p.relative_to(index.directory)) for p in index.paths]
        rows += witness_rows(side, data, scores, names, k)
    return rows


# ----------------------------------------------------------------- estimate
def _checkpoint_signature(inputs: Inputs, train: TrainOptions) -> dict:
    d = inputs.describe()
    keep = ("dir_a_resolved", "dir_b_resolved", "n_a", "n_b", "image_shape", "mode", "center_crop", "recursive")
    sig = {k: d[k] for k in keep}
    sig.update(steps=train.steps, batch_size=train.batch_size, critic=train.critic, seed=train.seed,
               holdout=train.holdout, eval_every=train.eval_every, folds=train.folds,
               input_noise=train.input_noise)
    if train.restarts != 1:  # absent from the signatures of checkpoints written before it existed
        sig["restarts"] = train.restarts
    return sig


def run_estimate(inputs: Inputs, train: TrainOptions, log: Log) -> W1Result:
    """Train and evaluate the critic on the two datasets (:func:`wdist.estimate_w1`)."""
    if train.checkpoint is not None and distributed.restart_count() > 0 and not train.resume:
        # torchrun --max-restarts restarted the group after a worker died: continue
        # from the last checkpoint instead of refusing to overwrite it.
        log.info(f"restart {distributed.restart_count()} of a torchrun job: resuming from {train.checkpoint}")
        train = replace(train, resume=True)
    if train.checkpoint is not None:
        note = preflight(train.checkpoint, _checkpoint_signature(inputs, train), train.resume)
        if note:
            log.info(note)
    return estimate_w1(
        inputs.data_a, inputs.data_b, critic=train.critic, steps=train.steps, batch_size=train.batch_size,
        holdout=train.holdout, confidence=train.confidence, device=train.device, seed=train.seed,
        progress=not inputs.options.quiet, num_workers=inputs.options.num_workers,
        eval_every=train.eval_every, checkpoint=train.checkpoint,
        checkpoint_every=train.checkpoint_every, resume=train.resume, bracket=train.bracket,
        folds=train.folds, input_noise=train.input_noise, restarts=train.restarts,
    )


def estimate_folders(dir_a: Path, dir_b: Path, load: LoadOptions, train: TrainOptions,
                     out: OutputFiles, command: str = "estimate") -> W1Result:
    """The whole ``wdist estimate`` pipeline; prints the results and returns the W1Result.

    Under torchrun (``WORLD_SIZE > 1``) every rank runs it: each decodes its
    share of the images and trains its share of every batch; only rank 0
    prints and writes files.
    """
    if train.resume and train.checkpoint is None:
        raise ValueError("resume: needs a checkpoint folder")
    resolve_device(train.device)  # before any folder is read
    distributed.init_from_env(train.device)
    log = Log(load.quiet, muted=not distributed.is_main())
    if not distributed.is_main():
        load = replace(load, quiet=True)  # no progress bars either
    inputs = load_inputs(dir_a, dir_b, load, log)
    result = run_estimate(inputs, train, log)
    if not distributed.is_main():
        return result
    log.result(result.summary(), always=True)
    for line in human_summary(result, inputs.describe()):
        log.result(line)
    if result.bracket is not None:
        log.result("  " + result.bracket.summary())
    payload = command_payload(result.to_dict(), command, inputs.describe(), vars(train))
    for what, path in write_outputs(result, payload, out, lambda: _witnesses(result, inputs)).items():
        log.result(f"  {what}: {path}")
    return result


# ------------------------------------------------------------ exact solves
def _load_for_exact(dir_a: Path, dir_b: Path, load: LoadOptions, max_points: int, force: bool,
                    log: Log) -> tuple[Inputs, torch.Tensor, torch.Tensor]:
    inputs = load_inputs(dir_a, dir_b, load, log)
    check_size(len(inputs.data_a), len(inputs.data_b), max_points, force)  # before decoding every image
    return (inputs, *inputs.tensors())


def exact_folders(dir_a: Path, dir_b: Path, load: LoadOptions, max_points: int, force: bool,
                  json_path: Path | None) -> float:
    """``wdist exact``: exact W1 between the two folders; prints it and returns it."""
    log = Log(load.quiet)
    inputs, xa, xb = _load_for_exact(dir_a, dir_b, load, max_points, force, log)
    n, m = len(xa), len(xb)
    with spinner(f"exact solve {n} x {m} (~{exact_memory_bytes(n, m) / 1e9:.2g} GB)", not load.quiet):
        value = exact_w1(xa, xb, max_points=max_points, force=force)
    log.result(f"exact W1: {value:.6g}", always=True)
    log.result(f"  {n} x {m} images of {'x'.join(map(str, inputs.shape))} values in [0, 1] (POT emd2)")
    if json_path:
        payload = command_payload({"exact": value}, "exact", inputs.describe(),
                                  {"max_points": max_points, "force": force})
        log.result(f"  JSON: {write_json(json_path, payload)}")
    return value


def crosscheck_table(cc: CrossCheck) -> str:
    """The cross-check as an aligned text table."""
    rows = [
        ("quantity", "value", "meaning"),
        ("exact W1 (POT)", f"{cc.exact:.6g}", "exact W1 of these two sets of images"),
        ("critic gap", f"{cc.critic:.6g}", f"in-sample gap of the certified critic ({cc.critic_name})"),
        ("ratio", f"{cc.ratio:.4g}", "critic / exact: tightness of the critic"),
        ("noise floor", f"{cc.noise_floor:.6g}", "exact W1 between two halves of DIR_A (sampling bias)"),
        ("Lipschitz <=", f"{cc.lipschitz:.6g}", "certified from the critic's weights"),
        ("sound", "yes" if cc.sound else "NO", "critic <= exact, as the certificate guarantees"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def crosscheck_folders(dir_a: Path, dir_b: Path, load: LoadOptions, train: TrainOptions, max_points: int,
                       force: bool, json_path: Path | None) -> CrossCheck:
    """``wdist crosscheck``: critic versus exact W1 on the same images, printed as a table."""
    log = Log(load.quiet)
    resolve_device(train.device)
    inputs, xa, xb = _load_for_exact(dir_a, dir_b, load, max_points, force, log)
    with spinner("crosscheck: exact solves and critic training", not load.quiet):
        cc = crosscheck(xa, xb, critic=train.critic, steps=train.steps, seed=train.seed, max_points=max_points,
                        force=force, progress=False, batch_size=train.batch_size, device=train.device)
    log.result(crosscheck_table(cc), always=True)
    if json_path:
        opts = {k: getattr(train, k) for k in ("critic", "steps", "batch_size", "device", "seed")}
        payload = command_payload(cc.to_dict(), "crosscheck", inputs.describe(), {**opts, "max_points": max_points})
        log.result(f"  JSON: {write_json(json_path, payload)}")
    return cc


# -------------------------------------------------------------------- score
@dataclass
class FolderScores:
    """Certified scores ``f(x) / max(1, L)`` of every image of one folder."""

    directory: Path
    names: list[str]
    scores: np.ndarray

    def describe(self) -> dict:
        return {"dir": str(self.directory), "n": len(self.scores), "mean": float(self.scores.mean()),
                "std": float(self.scores.std(ddof=1)), "scores": dict(zip(self.names, self.scores.tolist()))}


def _score_size(critic_path: Path, shape: tuple[int, ...], load: LoadOptions) -> tuple[int, int]:
    """The images' (H, W): the critic's own unless set; they must give the critic's shape."""
    if len(shape) != 3:
        raise ValueError(f"{critic_path}: the critic takes vectors of shape {shape}, not images")
    size = load.size or shape[1:]
    read_as = (1 if load.grayscale else 3, *size)
    if read_as != tuple(shape):
        raise ValueError(f"{critic_path}: the critic was trained on {'x'.join(map(str, shape))} images, these "
                         f"would be read as {'x'.join(map(str, read_as))} (choose the size and grayscale to match)")
    return size


def _score_folder(directory: Path, label: str, critic, size: tuple[int, int], load: LoadOptions,
                  device: torch.device, log: Log) -> FolderScores:
    index = _index(Path(directory), label, load, log)
    scores = certified_scores(critic, _dataset(index, size, load), lipschitz=critic.lipschitz, device=device,
                              num_workers=load.num_workers, progress=not load.quiet, desc=f"scoring {label} images")
    return FolderScores(Path(directory), [str(p.relative_to(index.directory)) for p in index.paths], scores)


def _gap(a: FolderScores, b: FolderScores, confidence: float) -> dict:
    """Held-out gap of a fixed certified critic and its CLT interval (independent folders)."""
    gap, se = gap_statistics(torch.from_numpy(a.scores), torch.from_numpy(b.scores))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return {"gap": gap, "std_error": se, "lower": gap - z * se, "upper": gap + z * se, "confidence": confidence}


def score_folders(dirs: Sequence[Path], critic_path: Path, load: LoadOptions, device: str, confidence: float,
                  json_path: Path | None) -> dict:
    """``wdist score``: a saved certified critic applied to one or two folders of images.

    One folder: the mean, spread and count of its certified scores.  Two
    folders: also their gap with a CLT interval; the critic was fixed before
    it saw these images, so the gap estimates a lower bound of W1 between
    the folders' distributions.  Returns the JSON payload.
    """
    log = Log(load.quiet)
    dev = resolve_device(device)
    critic = load_critic(critic_path).to(dev)
    size = _score_size(Path(critic_path), critic.sample_shape, load)
    folders = [_score_folder(d, label, critic, size, load, dev, log) for d, label in zip(dirs, ("DIR_A", "DIR_B"))]
    body = {"critic_file": str(critic_path), "lipschitz": critic.lipschitz, "sample_shape": list(critic.sample_shape),
            "folders": [f.describe() for f in folders]}
    if len(folders) == 2:
        body.update(_gap(folders[0], folders[1], confidence))
        pct = round(100 * confidence)
        log.result(f"gap: {body['gap']:.6g}  {pct}% CI [{body['lower']:.6g}, {body['upper']:.6g}]  "
                   f"Lipschitz <= {critic.lipschitz:.6g}", always=True)
    for label, f in zip(("DIR_A", "DIR_B"), body["folders"]):
        line = f"score: mean {f['mean']:.6g}  std {f['std']:.6g}  n {f['n']}  Lipschitz <= {critic.lipschitz:.6g}"
        if len(folders) == 1:
            log.result(line, always=True)  # the parseable line
        else:
            log.result(f"  {label} {f['dir']}: {line}")
    payload = command_payload(body, "score", {}, {**vars(load), "device": device, "confidence": confidence})
    if json_path:
        log.result(f"  JSON: {write_json(json_path, payload)}")
    return payload
