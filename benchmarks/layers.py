"""Cost of a certified convolution against nn.Conv2d of the same shape.

For each (channels, image size, batch) it times, in one process and one run:

* train step: forward + backward (+ kernel construction for BCOP, + the
  retraction wdist's trainer applies after each optimiser step);
* eval forward: BCOP uses its cached kernel.

and prints the ratios BCOP / Conv2d.  Run alone (two torch processes on two
cores slow each other down by up to 50x):

    .venv/bin/python benchmarks/layers.py            # full table
    .venv/bin/python benchmarks/layers.py --quick    # CI-sized

Results are written to benchmarks/results/layers.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch import nn

from wdist.nn import BCOPConv2d, retract_

from _markdown import publish

SHAPES = [  # (channels, size, batch)
    (64, 32, 128),
    (256, 8, 64),
    (512, 4, 64),
]
QUICK_SHAPES = [(64, 16, 32), (256, 4, 16)]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def _train_step(layer: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer, retract: bool):
    def step():
        opt.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()
        opt.step()
        if retract:
            retract_(layer)

    return step


def measure(channels: int, size: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size)
    plain = nn.Conv2d(channels, channels, 3, padding="same", padding_mode="circular")
    bcop = BCOPConv2d(channels, channels, 3)
    row = {"channels": channels, "size": size, "batch": batch}
    for name, layer, retract in (("conv", plain, False), ("bcop", bcop, True)):
        layer.train()
        opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
        row[f"{name}_train"] = _time(_train_step(layer, x, opt, retract), repeats)
        layer.eval()
        with torch.no_grad():
            row[f"{name}_eval"] = _time(lambda: layer(x), repeats)
    row["train_ratio"] = row["bcop_train"] / row["conv_train"]
    row["eval_ratio"] = row["bcop_eval"] / row["conv_eval"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "layers.md")
    args = parser.parse_args()
    shapes, repeats = (QUICK_SHAPES, 5) if args.quick else (SHAPES, 5)
    rows = [measure(*shape, repeats) for shape in shapes]
    notes = (f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Command: `python benchmarks/layers.py"
             f"{' --quick' if args.quick else ''}`. Best of 3 runs of {repeats} steps.")
    header = ["channels", "size", "batch", "Conv2d train ms", "BCOP train ms", "train ratio",
              "Conv2d eval ms", "BCOP eval ms", "eval ratio"]
    cells = [[str(r["channels"]), f"{r['size']}x{r['size']}", str(r["batch"]), f"{1e3 * r['conv_train']:.1f}",
              f"{1e3 * r['bcop_train']:.1f}", f"{r['train_ratio']:.2f}x", f"{1e3 * r['conv_eval']:.1f}",
              f"{1e3 * r['bcop_eval']:.1f}", f"{r['eval_ratio']:.2f}x"] for r in rows]
    publish(args.out, "BCOPConv2d vs nn.Conv2d (k=3, circular padding)", notes, header, cells)

if __name__ == "__main__":
    main()
