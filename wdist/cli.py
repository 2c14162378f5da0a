"""The ``wdist`` command line: W1 between two folders of images.

Standard output carries the results (the parseable ``W1:`` line first);
progress bars, notes and warnings go to standard error.  Bad input ends with
a one-line ``Error: ...`` and exit status 2; an interrupted run (Ctrl-C or
SIGTERM) exits with 130 or 143 and says where its checkpoint is.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import torch
from tqdm.auto import tqdm

from . import __version__, distributed
from .critics import CRITICS
from .images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, FolderIndex, ImageFolder, index_folder

__all__ = ["main", "cli", "LoadOptions", "TrainOptions", "OutputOptions", "Inputs", "load_inputs",
           "run_estimate", "parse_size"]

CLI_SETTINGS_NAME = "wdist-cli.json"
EXIT_SIGINT, EXIT_SIGTERM = 130, 143

IMAGE_RULES = f"""
\b
Images: {' '.join(IMAGE_EXTENSIONS)} (any letter case; hidden files skipped).
Every image is converted to RGB (8-bit luma L with --grayscale;
transparency onto white, 16-bit scaled to [0, 1]) and resized with PIL's
LANCZOS filter to --size, by default the size of the first image (sorted by
path) of DIR_A; --center-crop crops to the target aspect ratio first instead
of stretching.  Pixel values are in [0, 1], so W1 is in those units: the L2
distance over all C*H*W values.  Each image is decoded once up front, so a
bad file is reported (by name) before any training; images above --max-pixels
are refused as possible decompression bombs.
"""


# ------------------------------------------------------------------ errors
class CLIError(click.ClickException):
    """A one-line ``Error: ...`` with exit status 2 (bad input or options)."""

    exit_code = 2


class Interrupted(click.ClickException):
    """Ctrl-C (exit 130) or SIGTERM (exit 143), with where the checkpoint is."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so that cleanup runs as for Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (DataLoader workers wrap it in a traceback)."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and lines[0].startswith("Caught "):
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return " ".join(ln.strip() for ln in lines)


def _rename_sides(message: str) -> str:
    """wdist names its inputs x and y; the command line calls them DIR_A and DIR_B."""
    for old, new in (("x and y:", "DIR_A and DIR_B:"), ("x:", "DIR_A:"), ("y:", "DIR_B:")):
        if message.startswith(old):
            return new + message[len(old):]
    return message


def _interrupt_message(exc: KeyboardInterrupt) -> Interrupted:
    name, code = ("SIGTERM", EXIT_SIGTERM) if isinstance(exc, Terminated) else ("SIGINT", EXIT_SIGINT)
    ctx = click.get_current_context(silent=True)
    ckpt = ctx.meta.get("wdist.checkpoint") if ctx is not None else None
    if ckpt is None:
        return Interrupted(f"interrupted by {name}", code)
    steps = checkpoint_steps(ckpt)
    where = ", ".join(f"{k} at step {v}" for k, v in steps.items()) or "nothing saved yet"
    return Interrupted(f"interrupted by {name}; checkpoint in {ckpt} ({where}): "
                       f"rerun the same command with --resume to continue", code)


def handle_errors(fn: Callable) -> Callable:
    """Turn wdist's ValueErrors into ``Error: ...`` (exit 2) and interrupts into 130/143."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except ValueError as exc:
            raise CLIError(_rename_sides(_one_line(exc))) from None
        except KeyboardInterrupt as exc:
            raise _interrupt_message(exc) from None

    return wrapper


# ------------------------------------------------------------------ output
class Log:
    """Notes to stderr (silenced by --quiet), warnings always, results to stdout.

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


def _write(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_json(path: str | Path, payload: dict) -> Path:
    """``payload`` as indented JSON."""
    return _write(path, lambda p: p.write_text(json.dumps(payload, indent=2) + "\n"))


# ------------------------------------------------------------- parameters
def parse_size(text: str) -> tuple[int, int]:
    """``"H"`` or ``"HxW"`` -> ``(H, W)``, both positive.

    Raises
    ------
    ValueError
        With the reason.
    """
    parts = text.strip().lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"{text!r} is not H or HxW with positive integers (e.g. 32 or 32x48)")
    h, w = (int(parts[0]), int(parts[-1]))
    if h < 1 or w < 1:
        raise ValueError(f"{text!r}: height and width must be at least 1")
    return h, w


class SizeType(click.ParamType):
    """Click type for ``--size H[xW]``."""

    name = "H[xW]"

    def get_metavar(self, param, ctx=None) -> str:
        return "H[xW]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _options(*decorators: Callable) -> Callable:
    def apply(fn: Callable) -> Callable:
        for deco in reversed(decorators):
            fn = deco(fn)
        return fn

    return apply


def _folder_args() -> Callable:
    return _options(click.argument("dir_a", type=click.Path(path_type=Path)),
                    click.argument("dir_b", type=click.Path(path_type=Path)))


def _image_options() -> Callable:
    return _options(
        click.option("--size", type=SizeType(), default=None,
                     help="Resize every image to H or HxW pixels [default: size of the first image of DIR_A]."),
        click.option("--center-crop", is_flag=True,
                     help="Crop to the target aspect ratio before resizing instead of stretching."),
        click.option("--grayscale/--rgb", default=False, show_default=True,
                     help="Compare one luma channel (L) or three RGB channels."),
        click.option("--recursive", is_flag=True, help="Include subfolders (symlinks followed; loops are an error)."),
        click.option("--skip-bad-images", is_flag=True,
                     help="Leave corrupt/unreadable images out with a warning instead of stopping."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse larger images as possible decompression bombs."),
        click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Worker processes that decode images."),
        click.option("--quiet", "-q", is_flag=True, help="Only the result line: no progress bars or notes."),
    )


def _train_options() -> Callable:
    return _options(
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help="Training steps [default: up to 4000 with early stopping on the validation gap]."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Images per side per step, the global batch split between torchrun processes "
                          "[default: min(256, training split)]."),
        click.option("--critic", type=click.Choice(["auto", *CRITICS]), default="auto", show_default=True,
                     help="Critic architecture; auto trains several and keeps the best on validation."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Fixes splits, initialisation and batches (same seed, same value)."),
    )


# ------------------------------------------------------------------ options
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
    holdout: float = 0.5
    confidence: float = 0.95
    eval_every: int | None = None
    checkpoint: Path | None = None
    checkpoint_every: int | None = None
    resume: bool = False
    bracket: bool = False


@dataclass
class OutputOptions:
    """Files written after an estimate."""

    json: Path | None = None
    plot: Path | None = None
    save_critic: Path | None = None
    witness: Path | None = None
    report: Path | None = None


def _pick(cls, kwargs: dict) -> Any:
    return cls(**{f.name: kwargs[f.name] for f in fields(cls) if f.name in kwargs})


def _check_device(device: str) -> None:
    from .estimator import resolve_device

    resolve_device(device)  # ValueError naming the problem


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


def _count_resized(index: FolderIndex, size: tuple[int, int]) -> int:
    return sum(1 for s in index.sizes if tuple(s) != tuple(size))


def _index(directory: Path, label: str, opts: LoadOptions, log: Log) -> FolderIndex:
    index = index_folder(directory, recursive=opts.recursive, skip_bad=opts.skip_bad_images,
                         max_pixels=opts.max_pixels, num_workers=opts.num_workers,
                         progress=not opts.quiet, desc=f"checking {label} images")
    for reason in index.skipped:
        log.warn(f"skipped {reason}")
    if len(index) < 2:
        raise CLIError(f"{label} {directory}: need at least 2 images, found {len(index)}")
    return index


def load_inputs(dir_a: Path, dir_b: Path, opts: LoadOptions, log: Log) -> Inputs:
    """Index and validate both folders, choose the common size, build the datasets."""
    index_a = _index(Path(dir_a), "DIR_A", opts, log)
    same = Path(dir_a).resolve() == Path(dir_b).resolve()
    index_b = index_a if same else _index(Path(dir_b), "DIR_B", opts, log)
    if same:
        log.info("note: DIR_A and DIR_B are the same folder, so W1 is 0 (expect an estimate near 0)")
    size, rule = (opts.size, "--size") if opts.size else (index_a.sizes[0], f"size of {index_a.paths[0]}")
    if size[0] * size[1] > opts.max_pixels:
        raise CLIError(f"--size {size[0]}x{size[1]} exceeds --max-pixels {opts.max_pixels}")
    data = [ImageFolder(ix.paths, size, opts.grayscale, opts.center_crop, opts.max_pixels)
            for ix in (index_a, index_b)]
    inputs = Inputs(Path(dir_a), Path(dir_b), index_a, index_b, data[0], data[1], rule, opts)
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


# --------------------------------------------------------------- checkpoint
def checkpoint_steps(directory: str | Path) -> dict[str, int]:
    """Training step saved in each critic's checkpoint under ``directory``."""
    steps = {}
    for path in sorted(Path(directory).glob("*/checkpoint.pt")):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            steps[path.parent.name] = int(payload["trainer"]["progress"]["step"])
        except Exception:  # unreadable or foreign: estimate_w1 reports it on resume
            steps[path.parent.name] = -1
    return steps


def _checkpoint_signature(inputs: Inputs, train: TrainOptions) -> dict:
    d = inputs.describe()
    keep = ("dir_a_resolved", "dir_b_resolved", "n_a", "n_b", "image_shape", "mode", "center_crop", "recursive")
    sig = {k: d[k] for k in keep}
    sig.update(steps=train.steps, batch_size=train.batch_size, critic=train.critic, seed=train.seed,
               holdout=train.holdout, eval_every=train.eval_every)
    return sig


def prepare_checkpoint(inputs: Inputs, train: TrainOptions, log: Log) -> None:
    """Refuse to overwrite a checkpoint without --resume, and to resume with other settings.

    Every rank checks (so all stop on the same error); rank 0 writes the settings.
    """
    with distributed.agreement():
        _check_checkpoint(inputs, train, log)
    if distributed.is_main():
        write_json(train.checkpoint / CLI_SETTINGS_NAME, _checkpoint_signature(inputs, train))


def _check_checkpoint(inputs: Inputs, train: TrainOptions, log: Log) -> None:
    directory = train.checkpoint
    settings_file = directory / CLI_SETTINGS_NAME
    sig = _checkpoint_signature(inputs, train)
    existing = checkpoint_steps(directory) if directory.exists() else {}
    if not train.resume:
        if existing:
            raise CLIError(f"--checkpoint {directory} already holds a checkpoint: add --resume to continue "
                           f"it, or choose an empty folder")
    elif existing:
        saved = json.loads(settings_file.read_text()) if settings_file.exists() else None
        if saved is not None and saved != sig:
            diff = sorted(k for k in set(saved) | set(sig) if saved.get(k) != sig.get(k))
            raise CLIError(f"cannot resume {directory}: it was written with other settings ({', '.join(diff)})")
        where = ", ".join(f"{k} at step {v}" for k, v in existing.items())
        log.info(f"resuming from checkpoint {directory} ({where})")
    else:
        log.info(f"no checkpoint in {directory} yet: starting from the beginning")


# ----------------------------------------------------------------- estimate
def run_estimate(inputs: Inputs, train: TrainOptions, log: Log):
    """Train and evaluate the critic on the two datasets (:func:`wdist.estimate_w1`)."""
    from .estimator import estimate_w1

    if train.checkpoint is not None and distributed.restart_count() > 0 and not train.resume:
        # torchrun --max-restarts restarted the group after a worker died: continue
        # from the last checkpoint instead of refusing to overwrite it.
        log.info(f"restart {distributed.restart_count()} of a torchrun job: resuming from {train.checkpoint}")
        train = replace(train, resume=True)
    if train.checkpoint is not None:
        prepare_checkpoint(inputs, train, log)
        click.get_current_context().meta["wdist.checkpoint"] = train.checkpoint
    return estimate_w1(
        inputs.data_a, inputs.data_b, critic=train.critic, steps=train.steps, batch_size=train.batch_size,
        holdout=train.holdout, confidence=train.confidence, device=train.device, seed=train.seed,
        progress=not inputs.options.quiet, num_workers=inputs.options.num_workers,
        eval_every=train.eval_every, checkpoint=train.checkpoint,
        checkpoint_every=train.checkpoint_every, resume=train.resume, bracket=train.bracket,
    )


def interpretation(result) -> str:
    """One sentence on what the interval says."""
    one_sided = 100 * (1 - (1 - result.confidence) / 2)
    if result.lower > 0:
        return (f"The folders differ: the interval excludes 0, and W1 >= {result.lower:.4g} "
                f"with {one_sided:.3g}% confidence (the estimate is a certified lower bound).")
    return ("No difference detected: the interval includes 0 (this does not prove W1 = 0; "
            "more images or steps may reveal one).")


def human_summary(result, inputs: Inputs) -> list[str]:
    """A few lines for people, printed after the W1 line."""
    c, h, w = inputs.shape
    d = inputs.describe()
    s = result.settings
    return [
        f"  DIR_A {d['dir_a']} ({d['n_a']} images) vs DIR_B {d['dir_b']} ({d['n_b']} images), "
        f"as {c}x{h}x{w} {d['mode']} values in [0, 1]: W1 is the L2 distance over {c * h * w} values",
        f"  {s.get('critic')} critic, {result.steps} steps (best at {result.best_step}), test split "
        f"{result.n_test[0]} + {result.n_test[1]} images, {result.seconds:.1f} s on {s.get('device')}"
        + (f" x {s['world_size']} processes" if s.get("world_size", 1) > 1 else ""),
        f"  {interpretation(result)}",
    ]


def result_payload(result, inputs: Inputs, train: TrainOptions, command: str = "estimate") -> dict:
    """``W1Result.to_dict()`` plus the command's settings under ``"command"``."""
    payload = result.to_dict()
    payload["command"] = {"name": command, "wdist_version": __version__, **inputs.describe(),
                          **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(train).items()}}
    return payload


def save_critic(result, path: Path) -> Path:
    """The critic's ``state_dict`` as safetensors (contiguous copies: no shared storage)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in result.critic.state_dict().items()}
    meta = {"critic": str(result.settings.get("critic")), "lipschitz": repr(result.lipschitz),
            "sample_shape": json.dumps(result.settings.get("sample_shape")), "wdist_version": __version__}
    return _write(path, lambda p: save_file(state, str(p), metadata=meta))


def compute_witnesses(result, inputs: Inputs, k: int = 8):
    """Top/bottom-scored images of both folders (rows for :func:`wdist.report.plot_witness_grid`)."""
    from .report import critic_scores, witness_rows

    rows = []
    for side, data, index in (("A", inputs.data_a, inputs.index_a), ("B", inputs.data_b, inputs.index_b)):
        scores = critic_scores(result.critic, data, lipschitz=result.lipschitz,
                               device=result.settings.get("device", "cpu"),
                               num_workers=inputs.options.num_workers, progress=not inputs.options.quiet,
                               desc=f"scoring {side} images")
        names = [str(p.relative_to(index.directory)) for p in index.paths]
        rows += witness_rows(side, data, scores, names, k)
    return rows


def _report_settings(result, payload: dict) -> list[tuple[str, Any]]:
    c = payload["command"]
    return [
        ("DIR_A", f"`{c['dir_a']}` ({c['n_a']} images, {len(c['skipped_a'])} skipped)"),
        ("DIR_B", f"`{c['dir_b']}` ({c['n_b']} images, {len(c['skipped_b'])} skipped)"),
        ("compared as", f"{'x'.join(map(str, c['image_shape']))} {c['mode']} in [0, 1] ({c['size_rule']})"),
        ("critic", result.settings.get("critic")), ("steps", f"{result.steps} (best {result.best_step})"),
        ("batch size", result.settings.get("batch_size")), ("learning rate", result.settings.get("lr")),
        ("split train / validation / test", f"{result.n_train} / {result.n_validation} / {result.n_test}"),
        ("train-split gap (optimistic)", f"{result.train_value:.6g}"),
        ("seed", result.settings.get("seed")), ("device", result.settings.get("device")),
        ("time", f"{result.seconds:.1f} s"), ("wdist", __version__),
    ]


def write_report(directory: Path, result, payload: dict, rows) -> dict[str, Path]:
    """``report.md`` with ``curve.png``, ``witness.png`` and ``result.json`` in ``directory``."""
    from .report import markdown_report, plot_training_curve, plot_witness_grid

    text = markdown_report(result, _report_settings(result, payload), curve="curve.png",
                           witness="witness.png", witnesses=rows, interpretation=interpretation(result))
    return {
        "report": _write(directory / "report.md", lambda p: p.write_text(text)),
        "training curve": _write(directory / "curve.png", lambda p: plot_training_curve(result, p)),
        "witness grid": _write(directory / "witness.png", lambda p: plot_witness_grid(rows, p)),
        "JSON": write_json(directory / "result.json", payload),
    }


def write_outputs(result, inputs: Inputs, train: TrainOptions, out: OutputOptions, log: Log,
                  command: str = "estimate") -> dict[str, Path]:
    """Every file asked for; returns {what: path}."""
    from .report import plot_training_curve, plot_witness_grid

    payload = result_payload(result, inputs, train, command)
    written: dict[str, Path] = {}
    if out.json:
        written["JSON"] = write_json(out.json, payload)
    if out.plot:
        written["training curve"] = _write(out.plot, lambda p: plot_training_curve(result, p))
    if out.save_critic:
        written["critic (safetensors)"] = save_critic(result, out.save_critic)
    rows = compute_witnesses(result, inputs) if (out.witness or out.report) else None
    if out.witness:
        written["witness grid"] = _write(out.witness, lambda p: plot_witness_grid(rows, p))
    if out.report:
        for what, path in write_report(out.report, result, payload, rows).items():
            written.setdefault(what, path)
    return written


def estimate_folders(dir_a: Path, dir_b: Path, load: LoadOptions, train: TrainOptions,
                     out: OutputOptions, command: str = "estimate"):
    """The whole ``wdist estimate`` pipeline; prints the results and returns the W1Result.

    Under torchrun (``WORLD_SIZE > 1``) every rank runs it: each decodes its
    share of the images and trains its share of every batch; only rank 0
    prints and writes files.
    """
    if train.resume and train.checkpoint is None:
        raise click.UsageError("--resume needs --checkpoint DIR")
    if train.checkpoint_every is not None and train.checkpoint is None:
        raise click.UsageError("--checkpoint-every needs --checkpoint DIR")
    _check_device(train.device)
    distributed.init_from_env(train.device)
    log = Log(load.quiet, muted=not distributed.is_main())
    if not distributed.is_main():
        load = replace(load, quiet=True)  # no progress bars either
    inputs = load_inputs(dir_a, dir_b, load, log)
    result = run_estimate(inputs, train, log)
    if not distributed.is_main():
        return result
    log.result(result.summary(), always=True)
    for line in human_summary(result, inputs):
        log.result(line)
    if result.bracket is not None:
        from .bracketing import Bracket

        log.result("  " + Bracket(**result.bracket).summary())
    for what, path in write_outputs(result, inputs, train, out, log, command).items():
        log.result(f"  {what}: {path}")
    return result


# ------------------------------------------------------------------ commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wdist")
def cli() -> None:
    """Certified lower bounds on the Wasserstein-1 distance between two folders of images.

    A critic that is provably 1-Lipschitz (its constant is certified from its
    weights) is trained to separate the folders; its held-out gap estimates a
    lower bound of W1 with a confidence interval.  Run `wdist demo` for a
    self-contained example, `wdist COMMAND --help` for details.
    """


@cli.command(epilog=IMAGE_RULES)
@_folder_args()
@_image_options()
@_train_options()
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Fraction of each folder kept for the final test evaluation.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Level of the confidence interval.")
@click.option("--eval-every", type=click.IntRange(min=1), default=None,
              help="Steps between validation evaluations (and checkpoints) [default: 100].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the result and settings as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the training curve (PNG, 800x450).")
@click.option("--save-critic", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the trained critic's state_dict (safetensors).")
@click.option("--witness", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG grid of each folder's highest and lowest scored images.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path),
              help="Write report.md with curve.png, witness.png and result.json into this folder.")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path),
              help="Save the training state atomically into this folder.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="Minimum steps between checkpoints (saved at evaluations) [default: every evaluation].")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint DIR.")
@click.option("--bracket", is_flag=True,
              help="Also bound W1 from above by exact OT on disjoint subsamples (wdist.bracket); "
                   "adds a 'W1 in [lower, upper]' line and a bracket block to --json.")
@handle_errors
def estimate(dir_a: Path, dir_b: Path, json_path: Path | None, **kwargs) -> None:
    """Estimate W1 between the images of DIR_A and DIR_B.

    Prints `W1: <value>  95% CI [<lo>, <hi>]  Lipschitz <= <L>` and a short
    summary.  The value is the held-out gap of the trained critic divided by
    max(1, L): an unbiased estimate of a lower bound of W1, in [0, 1] pixel
    units.  Same --seed and settings give the same value; a run interrupted
    with Ctrl-C or SIGTERM continues from its --checkpoint with --resume and
    ends with the value of an uninterrupted run.
    """
    kwargs["json"] = json_path
    estimate_folders(dir_a, dir_b, _pick(LoadOptions, kwargs), _pick(TrainOptions, kwargs),
                     _pick(OutputOptions, kwargs))


def _load_tensors(inputs: Inputs, quiet: bool) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for label, data in (("A", inputs.data_a), ("B", inputs.data_b)):
        loader = torch.utils.data.DataLoader(data, batch_size=64, num_workers=inputs.options.num_workers)
        bar = tqdm(loader, desc=f"loading {label} images", unit="batch", leave=False,
                   disable=None if not quiet else True)
        out.append(torch.cat(list(bar)))
    return out[0], out[1]


def _single_process(command: str) -> None:
    """exact, crosscheck and demo are not split between processes: refuse torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CLIError(f"wdist {command} runs in one process; launch it without torchrun "
                       f"(only wdist estimate uses several)")


def _check_exact_size(n: int, m: int, max_points: int, force: bool) -> None:
    from .exact import exact_memory_bytes

    if max(n, m) > max_points and not force:
        gb = exact_memory_bytes(n, m) / 1e9
        raise CLIError(f"exact W1 of {n} x {m} images needs about {gb:.1f} GB of memory and grows "
                       f"quadratically (limit --max-points {max_points}); use fewer images, raise "
                       f"--max-points or pass --force")


def _exact_options() -> Callable:
    from .exact import DEFAULT_MAX_POINTS

    return _options(
        click.option("--max-points", type=click.IntRange(min=2), default=DEFAULT_MAX_POINTS, show_default=True,
                     help="Refuse larger folders (memory ~39 bytes per pair of images) unless --force."),
        click.option("--force", is_flag=True, help="Solve above --max-points anyway."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the result and settings as JSON."),
    )


@cli.command(epilog=IMAGE_RULES)
@_folder_args()
@_image_options()
@_exact_options()
@handle_errors
def exact(dir_a: Path, dir_b: Path, max_points: int, force: bool, json_path: Path | None, **kwargs) -> None:
    """Exact W1 between the two sets of images (POT network simplex, float64).

    This is the optimal-transport cost between the two empirical
    distributions, memory and time grow with (images in A) x (images in B).
    In high dimension it is biased upward by sampling noise (see `wdist
    crosscheck` for the noise floor).  Prints `exact W1: <value>`.
    """
    from .exact import exact_memory_bytes, exact_w1

    _single_process("exact")
    load = _pick(LoadOptions, kwargs)
    log = Log(load.quiet)
    inputs = load_inputs(dir_a, dir_b, load, log)
    n, m = len(inputs.data_a), len(inputs.data_b)
    _check_exact_size(n, m, max_points, force)
    xa, xb = _load_tensors(inputs, load.quiet)
    with spinner(f"exact solve {n} x {m} (~{exact_memory_bytes(n, m) / 1e9:.2g} GB)", not load.quiet):
        value = exact_w1(xa, xb, max_points=max_points, force=force)
    log.result(f"exact W1: {value:.6g}", always=True)
    log.result(f"  {n} x {m} images of {'x'.join(map(str, inputs.shape))} values in [0, 1] (POT emd2)")
    if json_path:
        payload = {"exact": value, "command": {"name": "exact", "wdist_version": __version__,
                                               **inputs.describe(), "max_points": max_points, "force": force}}
        log.result(f"  JSON: {write_json(json_path, payload)}")


def crosscheck_table(cc) -> str:
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


@cli.command(epilog=IMAGE_RULES)
@_folder_args()
@_image_options()
@_train_options()
@_exact_options()
@handle_errors
def crosscheck(dir_a: Path, dir_b: Path, max_points: int, force: bool, json_path: Path | None, **kwargs) -> None:
    """Critic versus exact W1 on the same images, side by side, with the noise floor.

    The critic is trained on all images (no held-out split) and its gap is
    compared with the exact W1 of the same samples: it can never exceed it
    when the Lipschitz certificate is sound.  The noise floor (exact W1
    between two halves of DIR_A) shows how much of the exact value is
    sampling noise.
    """
    from .exact import crosscheck as run_crosscheck

    _single_process("crosscheck")
    load, train = _pick(LoadOptions, kwargs), _pick(TrainOptions, kwargs)
    log = Log(load.quiet)
    _check_device(train.device)
    inputs = load_inputs(dir_a, dir_b, load, log)
    _check_exact_size(len(inputs.data_a), len(inputs.data_b), max_points, force)
    xa, xb = _load_tensors(inputs, load.quiet)
    with spinner("crosscheck: exact solves and critic training", not load.quiet):
        cc = run_crosscheck(xa, xb, critic=train.critic, steps=train.steps, seed=train.seed,
                            max_points=max_points, force=force, progress=False,
                            batch_size=train.batch_size, device=train.device)
    log.result(crosscheck_table(cc), always=True)
    if json_path:
        opts = {k: getattr(train, k) for k in ("critic", "steps", "batch_size", "device", "seed")}
        payload = {**cc.to_dict(), "command": {"name": "crosscheck", "wdist_version": __version__,
                                               **inputs.describe(), **opts, "max_points": max_points}}
        log.result(f"  JSON: {write_json(json_path, payload)}")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Folder for the demo images and results.")
@click.option("--quick", is_flag=True, help="Fewer images and steps (a smoke test of a few seconds).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--quiet", "-q", is_flag=True, help="Only the result line: no progress bars or notes.")
@handle_errors
def demo(out: Path, quick: bool, device: str, quiet: bool) -> None:
    """Run the whole pipeline on photos shipped with scikit-learn (no download).

    Cuts random 16x16 RGB patches out of china.jpg and flower.jpg
    (sklearn.datasets.load_sample_images), writes them as two folders of
    PNGs under --out, and estimates W1 between the folders exactly as
    `wdist estimate` does, writing a JSON result, the training curve, the
    witness grid and a Markdown report next to them.
    """
    from .demo import run_demo

    _single_process("demo")
    run_demo(out, quick=quick, device=device, quiet=quiet)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: SIGTERM behaves like Ctrl-C (clean exit, checkpoint kept)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
            _main_silent_rank(argv)
        else:
            cli.main(args=argv, prog_name="wdist")
    finally:
        distributed.shutdown()


def _main_silent_rank(argv: list[str] | None) -> None:
    """Ranks > 0 of a torchrun job: the same exit status as rank 0, but rank 0 alone
    prints the ``Error: ...`` line (every rank raises the same agreed error)."""
    try:
        code = cli.main(args=argv, prog_name="wdist", standalone_mode=False)
    except click.ClickException as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)
