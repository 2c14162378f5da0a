"""Folder and image rules (wdist.images), through the library and the command line."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from wdist.cli import parse_size
from wdist.images import ImageFolder, image_to_array, index_folder

from helpers import assert_bad_input, bomb_png, folders, invoke, load_png_folder, one_thread, write_folder  # noqa: F401 (fixtures)


# ---------------------------------------------------------- images / sizes
def test_mixed_sizes_modes_and_extensions(tmp_path):
    a = write_folder(tmp_path / "a", 6, size=(8, 8))
    b = tmp_path / "b"
    b.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(b / "one.JPG")
    Image.fromarray(rgb).convert("RGBA").save(b / "two.PNG")
    Image.fromarray(rgb).convert("P").save(b / "three.bmp")
    Image.fromarray(rgb[..., 0]).save(b / "four.tiff")
    Image.fromarray(rgb).save(b / "five.webp")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(b / "six.png")  # 16-bit grayscale
    (b / "notes.txt").write_text("not an image")
    (b / ".hidden.png").write_bytes(b"junk")
    result = invoke("estimate", a, b, "--steps", "3", "--critic", "linear", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    cmd = json.loads((tmp_path / "r.json").read_text())["command"]
    assert (cmd["n_a"], cmd["n_b"], cmd["resized_b"], cmd["image_shape"]) == (6, 6, 6, [3, 8, 8])


def test_size_grayscale_and_center_crop(tmp_path):
    folder = write_folder(tmp_path / "a", 3, size=(10, 20))
    data = ImageFolder(index_folder(folder, progress=False).paths, (6, 4), grayscale=True, center_crop=True)
    item = data[0]
    assert item.dtype == torch.float32 and item.shape == (1, 6, 4)
    assert 0 <= float(item.min()) and float(item.max()) <= 1
    assert parse_size("32") == (32, 32) and parse_size("16x24") == (16, 24)


def test_image_folder_cache_serves_the_same_pixels_without_rereading(tmp_path):
    paths = index_folder(write_folder(tmp_path / "a", 4, size=(8, 8)), progress=False).paths
    cached = ImageFolder(paths, (8, 8))
    first = [cached[i] for i in range(4)]
    assert torch.equal(torch.stack(first), load_png_folder(tmp_path / "a"))  # bit-identical to a fresh decode
    assert cached.cached_bytes == 4 * 3 * 8 * 8  # 8-bit pixels kept as uint8
    for p in paths:  # change the files: a cached item must not be read again
        Image.new("RGB", (8, 8), (255, 255, 255)).save(p)
    assert all(torch.equal(cached[i], first[i]) for i in range(4))
    assert torch.equal(ImageFolder(paths, (8, 8), cache_bytes=0)[0], torch.ones(3, 8, 8))  # no cache: rereads
    small = ImageFolder(paths, (8, 8), cache_bytes=2 * 3 * 8 * 8)
    [small[i] for i in range(4)]
    assert small.cached_bytes == 2 * 3 * 8 * 8  # the budget is never exceeded
    with pytest.raises(ValueError, match="cache_bytes"):
        ImageFolder(paths, (8, 8), cache_bytes=-1)


def test_pixel_rules():
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # transparent -> white
    assert np.allclose(image_to_array(rgba, None, grayscale=False), 1.0)
    deep = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert np.allclose(image_to_array(deep, (2, 2), grayscale=True), 1.0)
    gray = Image.fromarray(np.full((2, 2), 51, dtype=np.uint8))
    assert np.allclose(image_to_array(gray, None, grayscale=False), 0.2) and \
        image_to_array(gray, None, grayscale=False).shape == (3, 2, 2)


def test_skip_bad_images_warns_and_continues(folders, tmp_path):
    a, b = folders
    (a / "broken.png").write_bytes(b"definitely not a png")
    result = invoke("estimate", a, b, "--steps", "3", "--critic", "linear", "--skip-bad-images",
                    "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "Warning: skipped" in result.stderr and "broken.png" in result.stderr
    cmd = json.loads((tmp_path / "r.json").read_text())["command"]
    assert cmd["n_a"] == 24 and len(cmd["skipped_a"]) == 1 and "broken.png" in cmd["skipped_a"][0]


# ---------------------------------------------------------------- bad input
def test_missing_folder(folders, tmp_path):
    assert_bad_input(invoke("estimate", tmp_path / "nope", folders[1]), "nope", "does not exist")


def test_not_a_folder(folders, tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    assert_bad_input(invoke("estimate", folders[0], tmp_path / "file.png"), "file.png", "not a folder")


def test_empty_folder(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_bad_input(invoke("estimate", folders[0], tmp_path / "empty"), "empty", "folder is empty")


def test_folder_without_images(folders, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    (tmp_path / "docs" / "sub").mkdir()
    assert_bad_input(invoke("estimate", tmp_path / "docs", folders[1]), "docs", "no images", "--recursive")


def test_too_few_images(folders, tmp_path):
    write_folder(tmp_path / "one", 1)
    assert_bad_input(invoke("estimate", tmp_path / "one", folders[1]), "DIR_A", "at least 2")


def test_corrupt_image(folders):
    (folders[0] / "bad.png").write_bytes(b"this is text")
    assert_bad_input(invoke("estimate", *folders), "bad.png", "--skip-bad-images")


def test_truncated_image(folders):
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = folders[1] / "cut.png"
    Image.fromarray(arr).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_bad_input(invoke("estimate", *folders), "cut.png")


def test_decompression_bomb(folders):
    bomb_png(folders[0] / "bomb.png")
    assert_bad_input(invoke("estimate", *folders), "bomb.png", "decompression bomb")


def test_pixel_limit_option(folders):
    assert_bad_input(invoke("estimate", *folders, "--max-pixels", "40"), "img_000.png", "exceed the limit of 40")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files regardless of mode")
def test_unreadable_image(folders):
    path = folders[0] / "img_000.png"
    path.chmod(0)
    try:
        assert_bad_input(invoke("estimate", *folders), "img_000.png", "permission denied")
    finally:
        path.chmod(0o644)


def test_symlink_loop_with_recursive(folders):
    a = folders[0]
    (a / "sub").mkdir()
    os.symlink(a, a / "sub" / "loop")
    assert_bad_input(invoke("estimate", a, folders[1], "--recursive"), "loop", "symlink loop")
