"""Folders of images as a streamed, map-style torch ``Dataset``.

Rules (the command line documents the same):

* **Files.** ``.png .jpg .jpeg .bmp .webp .tif .tiff`` in any letter case.
  Hidden files and folders (name starting with ``.``) are ignored.
  Subfolders are read only with ``recursive=True``; symlinked folders are
  followed, and a link back to one of its own ancestors (a loop) is an error.
  Files are sorted by their path relative to the folder.
* **Validation.** Every file is opened and fully decoded once while the folder
  is indexed, so that a corrupt, truncated, unreadable or oversized image is
  reported (naming the file) before any training starts.  In a process group
  (``torchrun``) each rank decodes its share of the files and all ranks
  report the same first bad file.
* **Pixel limit.** An image with more than ``max_pixels`` pixels
  (default :data:`DEFAULT_MAX_PIXELS` = 2**26, about 8192 x 8192) is refused
  as a possible decompression bomb, as is anything PIL itself flags with
  ``DecompressionBombWarning``/``DecompressionBombError``.
* **Modes.** Images are converted to RGB, or to 8-bit luma ``L`` (ITU-R 601-2,
  PIL's rule) when ``grayscale=True``.  Transparency is composited onto
  white; 16/32-bit integer images are scaled by 1/65535, float images are
  clipped to [0, 1]; EXIF orientation is applied; multi-frame files use
  their first frame.
* **Size.** Every image is resized to ``size = (H, W)`` with
  :data:`RESAMPLE` (``PIL.Image.Resampling.LANCZOS``).  With
  ``center_crop=True`` the largest centred crop of the target aspect ratio is
  taken first (no distortion); otherwise the image is stretched.
* **Values.** float32 ``(C, H, W)`` tensors in [0, 1] (8-bit values / 255), so
  W1 is in those units: the L2 norm over all ``C*H*W`` values.
* **Memory.** Decoded pixels are cached per folder up to ``cache_bytes``
  (default 512 MiB, as uint8 for 8-bit images), so training does not decode
  each file again at every visit; larger folders stream from disk.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import distributed

__all__ = [
    "IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "DEFAULT_CACHE_BYTES", "RESAMPLE", "ImageError",
    "ImageFolder", "FolderIndex", "find_images", "index_folder", "open_image", "image_to_array",
    "image_to_pixels", "pixels_to_array", "parse_size",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 2**26
#: Decoded pixels kept per folder: 512 MiB hold 174,000 RGB images of 32x32.
DEFAULT_CACHE_BYTES = 2**29
RESAMPLE = Image.Resampling.LANCZOS
_HIGH_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """A folder or image that cannot be used; the message names the path."""


# --------------------------------------------------------------------- files
def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _dir_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _walk(directory: Path, ancestors: tuple[tuple[int, int], ...], recursive: bool) -> Iterator[Path]:
    """Image files under ``directory``; raises ImageError on a symlink loop."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise ImageError(f"{directory}: cannot list folder: {exc.strerror or exc}") from exc
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=True):
            if recursive:
                ident = _dir_id(path)
                if ident in ancestors:
                    raise ImageError(f"{path}: symlink loop (it leads back to one of its parent folders)")
                yield from _walk(path, ancestors + (ident,), recursive)
        elif _is_image(entry.name):
            yield path


def find_images(directory: str | Path, recursive: bool = False) -> list[Path]:
    """Image files of ``directory`` (sorted), after checking that it is a usable folder.

    Raises
    ------
    ImageError
        Missing path, not a folder, an empty folder, no image files, or a
        symlink loop (``recursive``).
    """
    directory = Path(directory)
    if not directory.exists():
        raise ImageError(f"{directory}: folder does not exist")
    if not directory.is_dir():
        raise ImageError(f"{directory}: not a folder")
    paths = list(_walk(directory, (_dir_id(directory),), recursive))
    if paths:
        return paths
    try:
        contents = [p for p in directory.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise ImageError(f"{directory}: cannot list folder: {exc.strerror or exc}") from exc
    if not contents:
        raise ImageError(f"{directory}: folder is empty")
    hint = "" if recursive or not any(p.is_dir() for p in contents) else " (pass recursive=True for subfolders)"
    raise ImageError(
        f"{directory}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}){hint}"
    )


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


# -------------------------------------------------------------------- pixels
def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode one image, refusing decompression bombs.

    Raises
    ------
    ImageError
        Naming ``path``: unreadable, not an image, corrupt or truncated,
        or more than ``max_pixels`` pixels.
    """
    if max_pixels > (Image.MAX_IMAGE_PIXELS or 0):
        Image.MAX_IMAGE_PIXELS = max_pixels  # never lower PIL's own guard, only raise it to ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise ImageError(
                        f"{path}: {img.width}x{img.height} pixels exceed the limit of {max_pixels} "
                        f"(possible decompression bomb; raise it with max_pixels)"
                    )
                img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: refused as a possible decompression bomb: {exc}") from exc
    except PermissionError as exc:
        raise ImageError(f"{path}: cannot read file: permission denied") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: cannot read file: it no longer exists (or is a broken link)") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not a readable image file") from exc
    except Exception as exc:  # PIL raises many types on corrupt data
        raise ImageError(f"{path}: corrupt or truncated image ({type(exc).__name__}: {exc})") from exc
    return img


def _flatten_mode(img: Image.Image, grayscale: bool) -> Image.Image:
    """8-bit RGB/L (alpha onto white) or float ``F`` in [0, 1] for high-bit-depth images."""
    if img.mode in _HIGH_BIT_MODES:
        return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0, 1), mode="F")
    if img.mode == "F":
        return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32), 0, 1), mode="F")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("L" if grayscale else "RGB")


def _resize(img: Image.Image, size: tuple[int, int], center_crop: bool) -> Image.Image:
    target = (size[1], size[0])  # PIL sizes are (W, H)
    if img.size == target:
        return img
    if center_crop:
        return ImageOps.fit(img, target, method=RESAMPLE)
    return img.resize(target, RESAMPLE)


def image_to_pixels(
    img: Image.Image, size: tuple[int, int] | None, grayscale: bool, center_crop: bool = False
) -> np.ndarray:
    """Apply the folder rules to a decoded image, before scaling: ``(C, H, W)``.

    uint8 (0-255) for 8-bit images, float32 in [0, 1] for high-bit-depth ones;
    :func:`pixels_to_array` turns either into float32 in [0, 1].
    """
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    img = _flatten_mode(img, grayscale)
    if size is not None:
        img = _resize(img, size, center_crop)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        arr = arr[None] if grayscale else np.repeat(arr[None], 3, axis=0)
        return np.ascontiguousarray(arr)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def pixels_to_array(pixels: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: 8-bit values / 255, float values as they are."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    return pixels


def image_to_array(
    img: Image.Image, size: tuple[int, int] | None, grayscale: bool, center_crop: bool = False
) -> np.ndarray:
    """Apply the folder rules to a decoded image: float32 ``(C, H, W)`` in [0, 1]."""
    return pixels_to_array(image_to_pixels(img, size, grayscale, center_crop))


# ------------------------------------------------------------------- dataset
class ImageFolder(Dataset):
    """Map-style dataset of image files: float32 ``(C, H, W)`` tensors in [0, 1].

    Each item is read from disk when first requested (streamed), so folders
    larger than memory work through a ``DataLoader``.  Decoded pixels are
    kept (8-bit images as uint8: C*H*W bytes each) up to ``cache_bytes``, so
    the training steps, which visit every image many times, decode each file
    once instead of once per visit; beyond the budget, items are decoded on
    every request.  A worker process of a ``DataLoader`` fills its own copy.

    Parameters
    ----------
    paths : sequence of path
        Image files (see :func:`index_folder` to find and validate them).
    size : (int, int)
        Target ``(H, W)``.
    grayscale : bool
        One ``L`` channel instead of three RGB channels.
    center_crop : bool
        Crop to the target aspect ratio before resizing, instead of stretching.
    max_pixels : int
        Decompression-bomb limit per image.
    cache_bytes : int
        Memory for decoded pixels (default :data:`DEFAULT_CACHE_BYTES`); 0
        decodes on every request.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: tuple[int, int],
        grayscale: bool = False,
        center_crop: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes: must be >= 0, got {cache_bytes}")
        self.paths = [Path(p) for p in paths]
        self.size = (int(size[0]), int(size[1]))
        self.grayscale = grayscale
        self.center_crop = center_crop
        self.max_pixels = max_pixels
        self.cache_bytes = cache_bytes
        self._cache: dict[int, np.ndarray] = {}
        self.cached_bytes = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every item."""
        return (1 if self.grayscale else 3, *self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = self._cache.get(index)
        if pixels is None:
            img = open_image(self.paths[index], self.max_pixels)
            pixels = image_to_pixels(img, self.size, self.grayscale, self.center_crop)
            if self.cached_bytes + pixels.nbytes <= self.cache_bytes:
                self._cache[index] = pixels
                self.cached_bytes += pixels.nbytes
        return torch.from_numpy(pixels_to_array(pixels))


# -------------------------------------------------------------------- index
@dataclass
class FolderIndex:
    """The validated images of one folder.

    Attributes
    ----------
    directory : Path
    paths : list of Path
        Valid images, sorted.
    sizes : list of (int, int)
        Original ``(H, W)`` of each valid image.
    modes : list of str
        Original PIL mode of each valid image.
    skipped : list of str
        ``"path: reason"`` for each bad image left out (``skip_bad=True``).
    """

    directory: Path
    paths: list[Path] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


class _Probe(Dataset):
    """Decodes one file per item: ``(size, mode, error message or None)``."""

    def __init__(self, paths: list[Path], max_pixels: int) -> None:
        self.paths, self.max_pixels = paths, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = open_image(self.paths[i], self.max_pixels)
        except ImageError as exc:
            return None, None, str(exc)
        return (img.height, img.width), img.mode, None


def _probe_all(paths: list[Path], max_pixels: int, num_workers: int, progress: bool, desc: str) -> list:
    """``(size, mode, error)`` of every path.  In a process group each rank decodes
    its strided share and the results are gathered, so every rank sees the same
    list and stops on the same first bad file."""
    mine = distributed.share(paths)
    loader = DataLoader(_Probe(mine, max_pixels), batch_size=None, num_workers=num_workers)
    bar = tqdm(loader, total=len(mine), desc=desc, unit="img", disable=None if progress else True, leave=False)
    return distributed.gather_strided([(None if size is None else tuple(size), mode, error)
                                       for size, mode, error in bar])


def index_folder(
    directory: str | Path,
    *,
    recursive: bool = False,
    skip_bad: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_workers: int = 0,
    progress: bool = True,
    desc: str | None = None,
) -> FolderIndex:
    """Find and validate (fully decode once) every image of ``directory``.

    Parameters
    ----------
    directory : path
    recursive : bool
        Include subfolders.
    skip_bad : bool
        Leave bad images out (listed in ``FolderIndex.skipped``) instead of
        raising on the first one.
    max_pixels : int
        Decompression-bomb limit per image.
    num_workers : int
        Decode in that many worker processes.
    progress : bool
        tqdm bar (shown on a terminal only).

    Raises
    ------
    ImageError
        A folder problem (see :func:`find_images`), a bad image (unless
        ``skip_bad``), or no valid image left.
    """
    with distributed.agreement():  # a folder missing on one machine stops every rank
        paths = find_images(directory, recursive)
    distributed.check_same(f"{directory}: the image files (count, SHA-256 of the paths)",
                           (len(paths), hashlib.sha256("\0".join(map(str, paths)).encode()).hexdigest()))
    index = FolderIndex(Path(directory))
    for path, (size, mode, error) in zip(paths, _probe_all(paths, max_pixels, num_workers, progress, desc or
                                                           f"checking {directory}")):
        if error is None:
            index.paths.append(path)
            index.sizes.append(tuple(size))
            index.modes.append(mode)
        elif skip_bad:
            index.skipped.append(error)
        else:
            raise ImageError(error + " (pass skip_bad=True to leave bad images out)")
    if not index.paths:
        raise ImageError(f"{directory}: none of the {len(paths)} image files could be read")
    return index
