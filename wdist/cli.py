"""The ``wdist`` command line: W1 between two folders of images.

Standard output carries the results (the parseable ``W1:`` line first);
progress bars, notes and warnings go to standard error.  Bad input ends with
a one-line ``Error: ...`` and exit status 2; an interrupted run (Ctrl-C or
SIGTERM) exits with 130 or 143 and says where its checkpoint is.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import click

from . import distributed
from ._version import __version__
from .checkpoint import checkpoint_steps
from .cli_options import (IMAGE_RULES, confidence_option, device_option, exact_options, folder_args,
                          image_options, json_option, train_options)
from .demo import run_demo
from .estimator import DEFAULT_HOLDOUT, MAX_TEST_SPLIT
from .folders import (LoadOptions, TrainOptions, crosscheck_folders, estimate_folders, exact_folders,
                      score_folders)
from .images import parse_size
from .report import OutputFiles

__all__ = ["main", "cli", "parse_size", "checkpoint_steps"]

EXIT_SIGINT, EXIT_SIGTERM = 130, 143


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


#: What a library message starts with -> what the command line calls it.
_SUBJECTS = (("x and y:", "DIR_A and DIR_B:"), ("x:", "DIR_A:"), ("y:", "DIR_B:"), ("checkpoint:", "--checkpoint"),
             ("size:", "--size"), ("resume:", "--resume"))
#: Library argument names inside messages -> the flags that set them.
_FLAGS = (("resume=True", "--resume"), ("force=True", "--force"), ("skip_bad=True", "--skip-bad-images"),
          ("recursive=True", "--recursive"), ("max_points", "--max-points"), ("max_pixels", "--max-pixels"))


def _cli_words(message: str) -> str:
    """The library speaks of x, y and its arguments; the command line of DIR_A, DIR_B and flags."""
    for old, new in _SUBJECTS:
        if message.startswith(old):
            message = new + message[len(old):]
            break
    for old, new in _FLAGS:
        message = message.replace(old, new)
    return message


def _interrupt_message(exc: KeyboardInterrupt, ckpt: Path | None) -> Interrupted:
    name, code = ("SIGTERM", EXIT_SIGTERM) if isinstance(exc, Terminated) else ("SIGINT", EXIT_SIGINT)
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
            raise CLIError(_cli_words(_one_line(exc))) from None
        except KeyboardInterrupt as exc:
            raise _interrupt_message(exc, kwargs.get("checkpoint")) from None

    return wrapper


def _pick(cls, kwargs: dict) -> Any:
    return cls(**{f.name: kwargs[f.name] for f in fields(cls) if f.name in kwargs})


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
@folder_args()
@image_options()
@train_options()
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=DEFAULT_HOLDOUT, show_default=True,
              help=f"Fraction of each folder kept for the final test evaluation (at most {MAX_TEST_SPLIT:,} images).")
@confidence_option("Level of the confidence interval.")
@click.option("--folds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cross-fitting: train K critics, each tested on the K-th of the images it never saw "
                   "(every image trains and tests; K times the training time).")
@click.option("--input-noise", type=click.FloatRange(min=0), default=None,
              help="Gaussian noise on training images, in units of their RMS pixel spread "
                   "[default: per critic; mlp on >= 64 values is trained with 0.7 and with 0, "
                   "and validation keeps one; 0 otherwise].")
@click.option("--eval-every", type=click.IntRange(min=1), default=None,
              help="Steps between validation evaluations (and checkpoints) [default: 100].")
@click.option("--restarts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Starts per randomly initialised critic: each trains to its first validation "
                   "plateau and only the best there goes on (K-1 more first stages of training).")
@json_option()
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
    if kwargs["resume"] and kwargs["checkpoint"] is None:
        raise click.UsageError("--resume needs --checkpoint DIR")
    if kwargs["checkpoint_every"] is not None and kwargs["checkpoint"] is None:
        raise click.UsageError("--checkpoint-every needs --checkpoint DIR")
    kwargs["json"] = json_path
    estimate_folders(dir_a, dir_b, _pick(LoadOptions, kwargs), _pick(TrainOptions, kwargs),
                     _pick(OutputFiles, kwargs))


def _single_process(command: str) -> None:
    """exact, crosscheck, score and demo are not split between processes: refuse torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CLIError(f"wdist {command} runs in one process; launch it without torchrun "
                       f"(only wdist estimate uses several)")


@cli.command(epilog=IMAGE_RULES)
@folder_args()
@image_options()
@exact_options()
@handle_errors
def exact(dir_a: Path, dir_b: Path, max_points: int, force: bool, json_path: Path | None, **kwargs) -> None:
    """Exact W1 between the two sets of images (POT network simplex, float64).

    This is the optimal-transport cost between the two empirical
    distributions, memory and time grow with (images in A) x (images in B).
    In high dimension it is biased upward by sampling noise (see `wdist
    crosscheck` for the noise floor).  Prints `exact W1: <value>`.
    """
    _single_process("exact")
    exact_folders(dir_a, dir_b, _pick(LoadOptions, kwargs), max_points, force, json_path)


@cli.command(epilog=IMAGE_RULES)
@folder_args()
@image_options()
@train_options()
@exact_options()
@handle_errors
def crosscheck(dir_a: Path, dir_b: Path, max_points: int, force: bool, json_path: Path | None, **kwargs) -> None:
    """Critic versus exact W1 on the same images, side by side, with the noise floor.

    The critic is trained on all images (no held-out split) and its gap is
    compared with the exact W1 of the same samples: it can never exceed it
    when the Lipschitz certificate is sound.  The noise floor (exact W1
    between two halves of DIR_A) shows how much of the exact value is
    sampling noise.
    """
    _single_process("crosscheck")
    crosscheck_folders(dir_a, dir_b, _pick(LoadOptions, kwargs), _pick(TrainOptions, kwargs), max_points, force,
                       json_path)


@cli.command(epilog=IMAGE_RULES)
@click.argument("dir_a", type=click.Path(path_type=Path))
@click.argument("dir_b", type=click.Path(path_type=Path), required=False)
@click.option("--critic", "critic_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A critic written by `wdist estimate --save-critic` (safetensors).")
@image_options()
@confidence_option("Level of the gap's confidence interval (two folders).")
@device_option()
@json_option("Write the summary and every image's score as JSON.")
@handle_errors
def score(dir_a: Path, dir_b: Path | None, critic_path: Path, confidence: float, device: str,
          json_path: Path | None, **kwargs) -> None:
    """Score the images of DIR_A (and DIR_B) with a saved certified critic.

    Prints `score: mean <m>  std <s>  n <n>  Lipschitz <= <L>` for one
    folder; with two, first `gap: <g>  95% CI [<lo>, <hi>]  Lipschitz <= <L>`
    and then one such line per folder.  Scores are f(x) / max(1, L), with L
    recomputed from the loaded weights (never read from the file).  The
    critic was fixed before it saw these images, so the gap between two
    folders estimates a lower bound of their W1: for instance, one critic
    tracks a generator over its training checkpoints.  Images are resized to
    the critic's own size unless --size is given; it must match.
    """
    _single_process("score")
    dirs = [dir_a] if dir_b is None else [dir_a, dir_b]
    score_folders(dirs, critic_path, _pick(LoadOptions, kwargs), device, confidence, json_path)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Folder for the demo images and results.")
@click.option("--quick", is_flag=True, help="Fewer images and steps (a smoke test of a few seconds).")
@device_option()
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
