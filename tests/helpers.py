"""Shared test helpers: exact spectra, sample generators, folders of images and the CLI."""

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from wdist.cli import cli


def circular_conv_singular_values(weight: torch.Tensor, size: int) -> torch.Tensor:
    """All singular values of the circular convolution with ``weight`` on size x size
    (Sedghi et al. 2019), float64."""
    symbol = torch.fft.fft2(weight.detach().double(), s=(size, size))
    return torch.linalg.svdvals(symbol.permute(2, 3, 0, 1)).flatten()


def power_iteration_norm(fn, shape, iters: int = 300, seed: int = 0) -> float:
    """Largest singular value of an *affine* map ``fn`` by power iteration on J^T J,
    using autograd for the adjoint (so it checks the real forward, float64)."""
    offset = fn(torch.zeros((1, *shape), dtype=torch.float64)).detach()
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
    v /= v.norm()
    sigma = 0.0
    for _ in range(iters):
        v.requires_grad_(True)
        out = fn(v) - offset
        (grad,) = torch.autograd.grad(out, v, grad_outputs=out)  # J^T J v
        sigma = grad.norm().sqrt().item()
        v = (grad / grad.norm()).detach()
    return sigma


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


def demo_quick_output(out: Path) -> tuple[list[str], dict]:
    """``wdist demo --quick --out OUT`` in a fresh process: its printed lines and its
    result.json, with OUT as ``<out>`` and the timing removed (what tests/data/demo_quick.json
    pins; tests/data/record_demo_quick.py records it with this same function)."""
    proc = run_wdist("demo", "--quick", "--out", out)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr)

    def placeholders(text: str) -> str:
        return text.replace(str(out.resolve()), "<out>").replace(str(out), "<out>")

    lines = [re.sub(r"[0-9.]+ s on cpu", "<seconds> s on cpu", ln) for ln in placeholders(proc.stdout).splitlines()]
    result = json.loads(placeholders((out / "result.json").read_text()))
    result.pop("seconds")
    settings = result["settings"]
    settings["candidate_seconds"] = sorted(settings["candidate_seconds"])  # which were timed, not how long
    return lines, result


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


def _shifted_gaussians(n: int, d: int, shift: float = 1.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    c = torch.randn(d, generator=gen)
    y = torch.randn(n, d, generator=gen) + shift * c / c.norm()
    return x, y


def _train_randomly(module: nn.Module, input_shape, steps: int = 50, lr: float = 1e-2, device="cpu"):
    """50 Adam steps on a random regression objective: moves the free parameters
    far from their (orthogonal) initialisation.  The module is moved to ``device``."""
    module.to(device)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    x = torch.randn(8, *input_shape, device=device)
    with torch.no_grad():
        target = torch.randn_like(module(x))
    for _ in range(steps):
        opt.zero_grad()
        loss = (module(x) - 3 * target).pow(2).mean()
        loss.backward()
        opt.step()
    return module
