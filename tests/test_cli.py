"""The wdist command line on folders of images written by the tests.

End-to-end tests run the installed program in a subprocess
(``python -m wdist``, the same entry point as the console script); bad-input
tests run the click command in-process (seconds cheaper, same code path) and a
few of them again as a real process to check the one-line error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import wdist
from wdist.cli import checkpoint_steps, cli, parse_size
from wdist.images import ImageFolder, image_to_array, index_folder

W1_LINE = re.compile(
    r"^W1: (?P<value>\S+)  (?P<pct>\d+)% CI \[(?P<lo>\S+), (?P<hi>\S+)\]  Lipschitz <= (?P<lip>\S+)$", re.M
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


# ------------------------------------------------------------------ helpers
def write_folder(folder: Path, n: int, *, size=(8, 8), shift: int = 0, seed: int = 0, mode: str = "RGB") -> Path:
    """``n`` random PNGs; ``shift`` brightens them (a second distribution)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for i in range(n):
        arr = np.clip(rng.integers(0, 160, (*size, channels)) + shift, 0, 255).astype(np.uint8)
        Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(folder / f"img_{i:03d}.png")
    return folder


def load_png_folder(folder: Path) -> torch.Tensor:
    """Independent reference loader: sorted PNGs, RGB, /255, (N, C, H, W) float32."""
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
              for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny file whose PNG header claims a decompression-bomb sized image."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def run_wdist(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed command line in a fresh process."""
    return subprocess.run([sys.executable, "-m", "wdist", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def invoke(*args):
    """The click command in-process (stderr kept separate)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_bad_input(result, *needles: str) -> None:
    """Exit 2, a one-line ``Error:`` naming ``needles``, no traceback."""
    stderr = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    error_lines = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert len(error_lines) == 1, stderr
    for needle in needles:
        assert needle in error_lines[0], (needle, error_lines[0])


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in the subprocesses: identical results, and no
    oversubscription of a small machine (two threads there can be 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def folders(tmp_path):
    """Two small folders of 8x8 RGB PNGs from different distributions."""
    return write_folder(tmp_path / "a", 24, seed=1), write_folder(tmp_path / "b", 24, shift=40, seed=2)


# --------------------------------------------------------------- end to end
E2E_ARGS = ("--steps", "30", "--seed", "3")


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One real run of the installed program with every output requested."""
    tmp = tmp_path_factory.mktemp("e2e")
    a, b = write_folder(tmp / "a", 24, seed=1), write_folder(tmp / "b", 24, shift=40, seed=2)
    out = tmp / "out"
    proc = run_wdist("estimate", a, b, *E2E_ARGS, "--json", out / "r.json", "--plot", out / "curve.png",
                     "--witness", out / "witness.png", "--save-critic", out / "critic.safetensors",
                     "--report", out / "report")
    assert proc.returncode == 0, proc.stderr
    return {"a": a, "b": b, "out": out, "proc": proc, "json": json.loads((out / "r.json").read_text())}


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "wdist"
    assert script.exists() and os.access(script, os.X_OK)
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0
    for command in ("estimate", "exact", "crosscheck", "demo"):
        assert command in proc.stdout


def test_prints_the_parseable_line(e2e):
    match = W1_LINE.search(e2e["proc"].stdout)
    assert match, e2e["proc"].stdout
    assert e2e["proc"].stdout.splitlines()[0] == match.group(0)
    assert float(match.group("value")) == pytest.approx(e2e["json"]["value"], rel=1e-5)
    assert float(match.group("lo")) <= float(match.group("value")) <= float(match.group("hi"))


def test_json_matches_the_library_on_the_same_tensors(e2e):
    x, y = load_png_folder(e2e["a"]), load_png_folder(e2e["b"])
    res = wdist.estimate_w1(x, y, steps=30, seed=3, progress=False, device="cpu")
    got = e2e["json"]
    for key in ("value", "lower", "upper", "lipschitz", "train_value", "std_error"):
        assert got[key] == pytest.approx(getattr(res, key), abs=1e-6), key
    assert got["steps"] == res.steps and got["best_step"] == res.best_step
    assert got["n_test"] == list(res.n_test) and got["settings"]["critic"] == res.settings["critic"]
    cmd = got["command"]
    assert (cmd["n_a"], cmd["n_b"], cmd["image_shape"], cmd["mode"]) == (24, 24, [3, 8, 8], "RGB")
    assert cmd["dir_a"] == str(e2e["a"]) and cmd["seed"] == 3 and cmd["steps"] == 30


def test_plot_is_a_real_png_of_the_documented_size(e2e):
    with Image.open(e2e["out"] / "curve.png") as img:
        assert img.format == "PNG" and img.size == (800, 450)
        arr = np.asarray(img.convert("L"))
    assert arr.std() > 5  # not a blank canvas


def test_witness_grid_and_report(e2e):
    with Image.open(e2e["out"] / "witness.png") as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 300
    report = (e2e["out"] / "report" / "report.md").read_text()
    assert W1_LINE.search(report)
    assert "![training curve](curve.png)" in report and "![witness images](witness.png)" in report
    for name in ("curve.png", "witness.png", "result.json"):
        assert (e2e["out"] / "report" / name).stat().st_size > 0


def test_saved_critic_is_safetensors(e2e):
    from safetensors import safe_open

    with safe_open(str(e2e["out"] / "critic.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["critic"] == e2e["json"]["settings"]["critic"]
    assert float(meta["lipschitz"]) == pytest.approx(e2e["json"]["lipschitz"])
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())


def test_exact_matches_the_library(folders, tmp_path):
    a, b = folders
    proc = run_wdist("exact", a, b, "--json", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    expected = wdist.exact_w1(load_png_folder(a), load_png_folder(b))
    assert json.loads((tmp_path / "e.json").read_text())["exact"] == pytest.approx(expected, rel=1e-12)
    assert re.search(r"^exact W1: \S+", proc.stdout, re.M)


def test_crosscheck_table(folders, tmp_path):
    a, b = folders
    result = invoke("crosscheck", a, b, "--steps", "20", "--critic", "linear", "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    for row in ("exact W1 (POT)", "critic gap", "noise floor", "Lipschitz <=", "sound"):
        assert row in result.stdout
    cc = json.loads((tmp_path / "c.json").read_text())
    assert cc["exact"] == pytest.approx(wdist.exact_w1(load_png_folder(a), load_png_folder(b)), rel=1e-12)
    assert cc["sound"] and cc["critic"] <= cc["exact"] * (1 + 1e-5)


def test_quiet_prints_only_the_result_line(folders):
    result = invoke("estimate", *folders, "--steps", "5", "--critic", "linear", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and W1_LINE.match(result.stdout.strip())


def test_help_is_complete():
    for command, options in {
        "estimate": ("--size", "--center-crop", "--grayscale", "--recursive", "--steps", "--batch-size",
                     "--device", "--num-workers", "--seed", "--json", "--plot", "--save-critic", "--witness",
                     "--report", "--checkpoint", "--checkpoint-every", "--resume", "--quiet",
                     "--skip-bad-images", "--max-pixels", "LANCZOS"),
        "exact": ("--max-points", "--force", "--json"),
        "crosscheck": ("--max-points", "--steps", "noise floor"),
        "demo": ("--out", "--quick"),
    }.items():
        result = invoke(command, "--help")
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        for option in options:
            assert option in text, (command, option)


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


def test_same_folder_gives_about_zero(folders, tmp_path):
    a, _ = folders
    result = invoke("estimate", a, a, "--steps", "20", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["lower"] <= 0 <= res["upper"] and abs(res["value"]) < 0.5
    assert "same folder" in result.stderr


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


def test_library_value_error_becomes_one_line(folders, tmp_path):
    write_folder(tmp_path / "three", 3)
    assert_bad_input(invoke("estimate", tmp_path / "three", folders[1], "--steps", "2"), "DIR_A", "too few")


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


@pytest.mark.parametrize("size", ["0x5", "abc", "5x", "-3", "4x0x2"])
def test_impossible_size(folders, size):
    assert_bad_input(invoke("estimate", *folders, "--size", size), "--size")


def test_unknown_device(folders):
    assert_bad_input(invoke("estimate", *folders, "--device", "tpu"), "device", "tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(folders):
    assert_bad_input(invoke("estimate", *folders, "--device", "cuda"), "CUDA is not available")


def test_resume_needs_checkpoint(folders):
    assert_bad_input(invoke("estimate", *folders, "--resume"), "--checkpoint")


def test_existing_checkpoint_needs_resume(folders, tmp_path):
    (tmp_path / "ck" / "bcop").mkdir(parents=True)
    torch.save({}, tmp_path / "ck" / "bcop" / "checkpoint.pt")
    assert_bad_input(invoke("estimate", *folders, "--checkpoint", tmp_path / "ck"), "--resume")


def test_exact_refuses_large_problems_with_the_memory(folders):
    assert_bad_input(invoke("exact", *folders, "--max-points", "10"), "GB", "--force")


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_real_process_prints_one_error_line(folders, tmp_path, case):
    a, b = folders
    if case == "missing":
        a, needle = tmp_path / "missing", "missing"
    else:
        (b / "zzz.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
        needle = "zzz.png"
    proc = run_wdist("estimate", a, b, "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


# --------------------------------------------------------- resume after kill
RESUME_ARGS = ("--critic", "bcop", "--steps", "300", "--eval-every", "20", "--seed", "5", "--batch-size", "16")
SENTINEL = 12345.0


def _mark_checkpoint(directory: Path) -> None:
    """Put a sentinel in the saved history: it reaches the result only if training resumed."""
    path = directory / "bcop" / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    payload["trainer"]["history"][0]["train_gap"] = SENTINEL
    torch.save(payload, path)


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    """Folders and the value of an uninterrupted run with a checkpoint folder."""
    tmp = tmp_path_factory.mktemp("resume")
    a, b = write_folder(tmp / "a", 48, seed=1), write_folder(tmp / "b", 48, shift=30, seed=2)
    proc = run_wdist("estimate", a, b, *RESUME_ARGS, "--checkpoint", tmp / "ck_ref", "--json", tmp / "ref.json",
                     "--quiet")
    assert proc.returncode == 0, proc.stderr
    return a, b, json.loads((tmp / "ref.json").read_text())


def _wait_for_checkpoint(proc: subprocess.Popen, directory: Path, timeout: float = 240) -> None:
    start = time.monotonic()
    while not list(directory.glob("*/checkpoint.pt")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() - start < timeout, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_resume_after_kill_matches_uninterrupted_run(resume_data, tmp_path, sig, code):
    a, b, reference = resume_data
    ck = tmp_path / "ck"
    args = [sys.executable, "-m", "wdist", "estimate", str(a), str(b), *RESUME_ARGS, "--checkpoint", str(ck),
            "--json", str(tmp_path / "r.json")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        _wait_for_checkpoint(proc, ck)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and str(ck) in stderr and "--resume" in stderr
    saved = checkpoint_steps(ck)
    assert saved and all(0 < s < 300 for s in saved.values())  # killed mid-run
    assert not (tmp_path / "r.json").exists()
    _mark_checkpoint(ck)
    resumed = run_wdist(*args[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint" in resumed.stderr
    got = json.loads((tmp_path / "r.json").read_text())
    for key in ("value", "lower", "upper", "lipschitz"):
        assert got[key] == pytest.approx(reference[key], abs=1e-6), key
    assert got["history"][0]["train_gap"] == SENTINEL  # it continued from the checkpoint
    assert [h["step"] for h in got["history"]] == [h["step"] for h in reference["history"]]
    assert [h["val_gap"] for h in got["history"]] == pytest.approx([h["val_gap"] for h in reference["history"]])


# --------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_quick(tmp_path):
    proc = run_wdist("demo", "--quick", "--out", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    assert W1_LINE.search(proc.stdout)
    for name in ("report.md", "curve.png", "witness.png", "result.json", "critic.safetensors"):
        assert (tmp_path / "demo" / name).exists(), name
        assert str(tmp_path / "demo" / name) in proc.stdout
    assert len(list((tmp_path / "demo" / "china").glob("*.png"))) == 48
    assert json.loads((tmp_path / "demo" / "result.json").read_text())["lower"] > 0


def test_bracket_flag_adds_the_upper_side(folders, tmp_path):
    a, b = folders
    out = tmp_path / "r.json"
    result = invoke("estimate", a, b, "--steps", "20", "--critic", "linear", "--bracket", "--json", out)
    assert result.exit_code == 0, result.output
    assert re.search(r"W1 in \[[-0-9.e]+, [-0-9.e]+\] \(95% bracket", result.output)
    block = json.loads(out.read_text())["bracket"]
    assert block["consistent"] and block["lower"] <= block["upper"]
    assert block["m"] == 6 and block["repeats"] == 4  # 24 images per side: m = 24 // 4
