"""Tightness of every critic on cases with exact answers, with its certificate.

For each case the truth is known exactly and each critic's *certified*
estimate (the gap divided by max(1, certified Lipschitz bound)) is compared
with it:

* ``translation``: y = x + c on 8x8 Gaussian images, population W1 = ||c|| = 1;
  estimate on a held-out split (a statistically valid lower bound).
* ``mixture (POT)``: 4x4 Gaussian images vs a two-component mixture; truth =
  exact W1 of the samples (``wdist.exact_w1``, POT emd2); critic trained and
  evaluated on the same samples (``holdout=0``): no certified critic can
  exceed it, so certified / truth <= 1 is a hard check of the certificate.
* ``digits 0-4 vs 5-9``: scikit-learn digits (8x8, values / 16), in-sample vs
  the exact sample W1.
* ``photo patches``: 8x8 RGB patches of scikit-learn's china.jpg vs
  flower.jpg (values / 255), in-sample vs the exact sample W1.

Certified Lipschitz bounds above 1 + 1e-4 are flagged in red (and with "!").
The uncertified gap (the critic's own gap, before the division) is reported
beside it: for OSSN and WGAN-GP it is the number a run without certification would report.

    .venv/bin/python benchmarks/tightness.py            # all cases, ~8 min on one thread (measured 454 s)
    .venv/bin/python benchmarks/tightness.py --case digits   # one case, merged with the saved others
    .venv/bin/python benchmarks/tightness.py --quick    # ~1 min (measured 47 s)

Results: benchmarks/results/tightness.md, .png and .json (the rows;
``--case`` runs update it) (``--quick``: tightness-quick.*).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import wdist

from _markdown import publish

CRITICS = ["bcop", "rko", "ossn", "bcop-relu", "rko-relu", "ossn-relu", "mlp", "wgan-gp", "linear", "anchors",
           "auto"]
FLAG = 1 + 1e-4
RESULTS = Path(__file__).parent / "results"
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]  # no red: red marks flagged certificates


@dataclass(frozen=True)
class Plan:
    n: int  # samples per side (cap for the data sets)
    steps: int
    batch_size: int = 128
    eval_every: int = 50


FULL = Plan(n=1000, steps=200)
QUICK = Plan(n=200, steps=20, eval_every=10)


@dataclass
class Case:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    truth: float
    truth_kind: str
    holdout: float


def translation(n: int, gen: torch.Generator) -> Case:
    c = torch.randn(1, 8, 8, generator=gen)
    c /= c.norm()
    x = torch.randn(2 * n, 1, 8, 8, generator=gen)
    y = torch.randn(2 * n, 1, 8, 8, generator=gen) + c
    return Case("translation", x, y, 1.0, "||c|| (population)", 0.5)


def mixture(n: int, gen: torch.Generator) -> Case:
    x = torch.randn(n, 1, 4, 4, generator=gen)
    centre = torch.randn(1, 4, 4, generator=gen)
    centre *= 2 / centre.norm()
    signs = torch.randint(0, 2, (n, 1, 1, 1), generator=gen) * 2 - 1
    y = 0.5 * torch.randn(n, 1, 4, 4, generator=gen) + signs * centre
    return _in_sample("mixture (POT)", x, y)


def digits(n: int, gen: torch.Generator) -> Case:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16
    target = torch.tensor(d.target)
    x, y = images[target <= 4], images[target >= 5]
    return _in_sample("digits 0-4 vs 5-9", _subset(x, n, gen), _subset(y, n, gen))


def photo_patches(n: int, gen: torch.Generator) -> Case:
    from sklearn.datasets import load_sample_images

    from wdist.demo import cut_patches

    photos = load_sample_images()
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    sides = []
    for image in photos.images:  # china.jpg, flower.jpg
        patches = np.stack(cut_patches(image, n, 8, rng))
        sides.append(torch.tensor(patches, dtype=torch.float32).permute(0, 3, 1, 2) / 255)
    return _in_sample("photo patches (china vs flower)", *sides)


def _subset(t: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    return t[torch.randperm(len(t), generator=gen)[:n]]


def _in_sample(name: str, x: torch.Tensor, y: torch.Tensor) -> Case:
    return Case(name, x, y, wdist.exact_w1(x, y), "exact sample W1 (POT)", 0.0)


CASES: dict[str, Callable[[int, torch.Generator], Case]] = {
    "translation": translation, "mixture": mixture, "digits": digits, "patches": photo_patches,
}


def run_one(case: Case, critic: str, plan: Plan) -> dict:
    start = time.perf_counter()
    res = wdist.estimate_w1(case.x, case.y, critic=critic, steps=plan.steps, batch_size=plan.batch_size,
                            eval_every=plan.eval_every, holdout=case.holdout, progress=False, device="cpu")
    raw = res.value * max(1.0, res.lipschitz)  # the critic's own gap, before certification
    return {
        "case": case.name, "critic": critic, "chosen": res.settings["critic"], "value": res.value,
        "truth": case.truth, "ratio": res.value / case.truth, "lipschitz": res.lipschitz,
        "raw_ratio": raw / case.truth, "constrained": res.settings["lipschitz_by_construction"],
        "seconds": time.perf_counter() - start,
    }


def _flag(lipschitz: float) -> str:
    text = f"{lipschitz:.4g}"
    return f'<span style="color:red">**{text} !**</span>' if lipschitz > FLAG else text


def _cells(r: dict) -> list[str]:
    critic = r["critic"] if r["critic"] != "auto" else f"auto ({r['chosen']})"
    return [r["case"], critic, f"{r['value']:.4g}", f"{r['truth']:.4g}", f"**{r['ratio']:.3f}**",
            _flag(r["lipschitz"]), f"{r['raw_ratio']:.3f}", "yes" if r["constrained"] else "no",
            f"{r['seconds']:.0f}"]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=100)
    width = 0.8 / len(cases)
    for j, case in enumerate(cases):
        sub = [r for r in rows if r["case"] == case]
        xs = np.arange(len(sub)) + (j - (len(cases) - 1) / 2) * width
        bars = ax.bar(xs, [r["ratio"] for r in sub], width, label=case, color=COLORS[j % len(COLORS)])
        for bar, r in zip(bars, sub):
            if r["lipschitz"] > FLAG:  # certificate > 1: the estimate was divided by it
                bar.set_hatch("//")
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, "!", color="red",
                        ha="center", va="bottom", fontweight="bold")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    labels = [r["critic"] for r in rows if r["case"] == cases[0]]
    ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("certified estimate / truth")
    ax.set_title("Tightness per critic (hatched, red !: certified Lipschitz bound > 1 + 1e-4)", pad=4)
    ax.set_ylim(0, 1.12)
    ax.legend(fontsize=8, ncol=len(cases), loc="upper center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _load(path: Path, plan: Plan) -> dict:
    """Rows of the cases already run with this plan (``--case`` runs add to them)."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("plan") == asdict(plan):
            return saved
    return {"plan": asdict(plan), "cases": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: fewer samples and steps")
    parser.add_argument("--case", action="append", choices=list(CASES),
                        help="run only this case (repeatable) and merge it with the cases saved before")
    parser.add_argument("--out", type=Path, default=None, help="Markdown output (PNG and JSON beside it)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    out = args.out or RESULTS / ("tightness-quick.md" if args.quick else "tightness.md")
    store = _load(out.with_suffix(".json"), plan) if args.case else {"plan": asdict(plan), "cases": {}}
    for key in args.case or list(CASES):
        start = time.perf_counter()
        case = CASES[key](plan.n, torch.Generator().manual_seed(0))
        rows = []
        for critic in CRITICS:
            rows.append(run_one(case, critic, plan))
            print(" | ".join(_cells(rows[-1])), flush=True)
        store["cases"][key] = {"rows": rows, "seconds": time.perf_counter() - start}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(store, indent=1))
    done = [k for k in CASES if k in store["cases"]]
    rows = [r for k in done for r in store["cases"][k]["rows"]]
    total = sum(store["cases"][k]["seconds"] for k in done)
    png = out.with_suffix(".png")
    plot(rows, png)
    notes = (
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}. "
        f"Command: `python benchmarks/tightness.py{' --quick' if args.quick else ''}` "
        f"(cases {', '.join(done)}: {total:.0f} s in all). "
        f"Up to {plan.n} samples per side, {plan.steps} Adam steps (lr 1e-3, anchors 1e-2), batch "
        f"{plan.batch_size} per side, best validation critic kept, seed 0.\n\n"
        "certified = gap / max(1, L) with L the certified Lipschitz bound (`wdist.lipschitz_bound`); "
        "certified / truth <= 1 must hold (up to CLT noise on the held-out translation). "
        "L > 1 + 1e-4 is in red with `!`. uncertified = the critic's gap before the division (not a bound "
        "when L > 1). 'by construction' = 1-Lipschitz by construction (OSSN and WGAN-GP are not).\n\n"
        f"![tightness]({png.name})"
    )
    header = ["case", "critic", "certified estimate", "truth", "certified / truth", "Lipschitz bound L",
              "uncertified / truth", "by construction", "s"]
    publish(out, "Tightness of the critics (certified estimate / exact truth)", notes, header,
            [_cells(r) for r in rows])


if __name__ == "__main__":
    main()
