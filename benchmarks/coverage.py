"""Bias and coverage of the estimate and of the bracket on translations (known W1).

For y = x + c the population W1 is ||c||.  Over several seeds and sample sizes
n it reports, in one run:

* how often the critic's interval lies below the truth (``lower <= W1``),
* how often the bracket ``[lower, upper]`` contains W1, and its mean width,
* the mean exact sample W1 of the full samples (biased upward in high
  dimension) beside the mean held-out estimate.

    .venv/bin/python benchmarks/coverage.py            # 20 seeds, n up to 8000
    .venv/bin/python benchmarks/coverage.py --quick    # 5 seeds, CI-sized
    .venv/bin/python benchmarks/coverage.py --seeds 1000 --sizes 500 \
        --out benchmarks/results/coverage-1000-seeds.md   # the rate itself, to +-0.5%

Results: benchmarks/results/coverage.md (and coverage-1000-seeds.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

import wdist

from _markdown import publish

SHIFT = 0.7


def _translation(n: int, d: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    c = torch.zeros(d)
    c[0] = SHIFT
    return torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen) + c


def run(d: int, n: int, seeds: int) -> dict:
    below, inside, widths, values, exacts = 0, 0, [], [], []
    for seed in range(seeds):
        x, y = _translation(n, d, 1000 * n + seed)
        res = wdist.estimate_w1(x, y, critic="linear", seed=seed, progress=False, bracket=True)
        b = res.bracket
        below += res.lower <= SHIFT
        inside += b["lower"] <= SHIFT <= b["upper"]
        widths.append(b["width"])
        values.append(res.value)
        if n <= 4000:
            exacts.append(wdist.exact_w1(x, y))
    return {
        "d": d, "n": n, "seeds": seeds, "below": int(below), "inside": int(inside),
        "width": float(np.mean(widths)), "value": float(np.mean(values)),
        "exact": float(np.mean(exacts)) if exacts else float("nan"),
    }


def _rate(count: int, seeds: int) -> str:
    """``0.975 (975/1000)``: the count too, since a rate of few seeds hides its binomial noise."""
    return f"{count / seeds:.3f} ({count}/{seeds})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, help="seeds per row (default 20; --quick: 5)")
    parser.add_argument("--sizes", help="comma-separated n per side (default 500,2000,8000; --quick: 500,2000)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "coverage.md")
    args = parser.parse_args()
    seeds, sizes = (5, [500, 2000]) if args.quick else (20, [500, 2000, 8000])
    seeds = args.seeds or seeds
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else sizes
    rows = [run(d, n, seeds) for d in (2, 16) for n in sizes]
    command = " ".join(["python benchmarks/coverage.py", *sys.argv[1:]])
    notes = (f"Machine: {platform.machine()}, torch {torch.__version__}. Command: "
             f"`{command}`. Linear critic (closed form, cross-fitted in tenths of the test split), "
             f"holdout {wdist.estimator.DEFAULT_HOLDOUT} (the default), 95% levels (the bracket's "
             "sides at 97.5% each). With k seeds a row's "
             "coverage is a binomial count: at a true 97.5% one-sided rate, 20 seeds show 18/20 or "
             "fewer 9% of the time.")
    header = ["d", "n per side", "seeds", "P(lower <= W1)", "P(W1 in bracket)", "mean bracket width",
              "mean estimate", "mean exact sample W1"]
    cells = [[str(r["d"]), str(r["n"]), str(r["seeds"]), _rate(r["below"], seeds), _rate(r["inside"], seeds),
              f"{r['width']:.3f}", f"{r['value']:.3f}", f"{r['exact']:.3f}"] for r in rows]
    publish(args.out, f"Coverage and bias on translations (W1 = {SHIFT})", notes, header, cells)

if __name__ == "__main__":
    main()
