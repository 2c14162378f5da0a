"""Reusable options of the ``wdist`` commands (click decorators) and the image rules they share."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from .critics import CRITICS
from .exact import DEFAULT_MAX_POINTS
from .images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, parse_size

__all__ = ["IMAGE_RULES", "SizeType", "folder_args", "image_options", "train_options", "exact_options",
           "confidence_option", "device_option", "json_option"]

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


def folder_args() -> Callable:
    return _options(click.argument("dir_a", type=click.Path(path_type=Path)),
                    click.argument("dir_b", type=click.Path(path_type=Path)))


def image_options() -> Callable:
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


def train_options() -> Callable:
    return _options(
        click.option("--steps", type=click.IntRange(min=1), default=None,
                     help="Training steps [default: up to 4000 (one per four training samples when that is "
                          "more, at most 16000) with early stopping on the validation gap]."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Images per side per step, the global batch split between torchrun processes "
                          "[default: min(256, training split)]."),
        click.option("--critic", type=click.Choice(["auto", *CRITICS]), default="auto", show_default=True,
                     help="Critic architecture; auto trains several and keeps the best on validation."),
        device_option(),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Fixes splits, initialisation and batches (same seed, same value)."),
    )


def exact_options() -> Callable:
    return _options(
        click.option("--max-points", type=click.IntRange(min=2), default=DEFAULT_MAX_POINTS, show_default=True,
                     help="Refuse larger folders (memory ~39 bytes per pair of images) unless --force."),
        click.option("--force", is_flag=True, help="Solve above --max-points anyway."),
        json_option(),
    )


def confidence_option(help: str) -> Callable:
    return click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
                        show_default=True, help=help)


def device_option() -> Callable:
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


def json_option(help: str = "Write the result and settings as JSON.") -> Callable:
    return click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help=help)
