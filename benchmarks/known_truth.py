"""Tightness against a known truth: the certified estimate / the exact W1.

Every pair here has an exact W1 by construction (:mod:`wdist.datasets`):

* ``k{D}-{N}``: Korotin et al.'s (NeurIPS 2022) min-funnel pairs, uniform
  cube [-2.5, 2.5]^D moved along the rays of N cones (deg 8); their
  published relative errors are printed beside ours (sort-out = orthogonal
  dense layers + FullSort, certified; WGAN-GP, not certified);
* ``img-{base}-{N}-{deg}``: the generator-free image pairs, real images in
  [-1, 1] (3x16x16 / 3x32x32 photo crops, 8x8 digits) moved toward N
  uniform-noise images;
* ``lat{D}-{K}-{p}``: the same cube moved toward a lattice of parallel flats
  (:class:`~wdist.datasets.LatticePair`: spacing p in a random K-dimensional
  subspace, deg 8): an optimal potential made of wedges (``K = 1``, a zigzag
  ridge) or of the distance to a lattice in K dimensions, not of cones about
  points; the control that an estimator tuned on the funnels is not tuned to
  their family alone.  p = 8 leaves about one cell a direction (a coarse
  difference of the laws), p = 2 about three (a fine one);
* ``shift{d}``: a translation of a standard Gaussian by a vector of norm
  1.5 (W1 = 1.5, linear optimal potential): the easy control.

Two regimes, as a user meets them:

* **finite**: ``n`` samples per side, ``wdist.estimate_w1(x, y)`` (what a
  user with two folders has);
* **sampler**: callables drawing fresh samples, ``estimate_w1(sx, sy)``
  (what a user with a generative model has; Korotin et al.'s protocol).

Each row: truth (Monte-Carlo mean of ||y - T(y)|| with its standard error),
value [lower, upper], value / truth, the chosen critic's population gap / truth
(:func:`population_gap`: its gap on 50,000 fresh draws per side, which the
value estimates without bias, with a fraction of the noise; funnel pairs
whose base can be drawn afresh), the centre cone's gap / truth
(:func:`centre_cone_gap`: ``-||z||``, one funnel at the centre of the apices'
box, trained on nothing: what a critic that locates no apex reaches; funnel
pairs), whether ``lower <= truth``, the chosen
critic, its certified Lipschitz bound, wall time, and for the funnel pairs
(:func:`ray_diagnostic`) the critic's mean gradient norm on the transport
segments and its length-weighted cosine with them: their product is about the
critic's population gap over W1, so they tell a network that loses gradient
norm from one that points off the optimal rays.  ``--seeds K`` adds the
honesty check: K seeds of one pair, how often ``lower <= truth``.

    .venv/bin/python benchmarks/known_truth.py              # the targets' grid (see README for time)
    .venv/bin/python benchmarks/known_truth.py --case k128-4:finite:10000   # one row, merged
    .venv/bin/python benchmarks/known_truth.py --seeds 20   # honesty over 20 seeds
    .venv/bin/python benchmarks/known_truth.py --quick      # seconds: the slow test's smoke run
    .venv/bin/python benchmarks/known_truth.py --render     # .md and .png again from the .json

Results: benchmarks/results/known_truth.md, .json, .png (``--quick``: known_truth-quick.*).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import wdist
from wdist.datasets import (FunnelPair, RayMonotonePair, image_funnel_pair, korotin_pair, lattice_pair,
                            translation_samplers)
from wdist.training import gap_statistics

from _markdown import publish

RESULTS = Path(__file__).parent / "results"
#: Korotin et al. 2022, relative error of the W1 estimate in % (repo metrics/*.csv):
#: (sort-out, WGAN-GP) per (D, N).
PUBLISHED = {(128, 4): (-8, -1), (128, 16): (-9, -14), (128, 64): (-34, -32), (128, 256): (-38, -42),
             (16, 4): (-3, None), (16, 256): (-60, None), (64, 16): (1, None)}
SHIFT_NORM = 1.5
#: Transport segments that :func:`ray_diagnostic` samples.
RAY_POINTS = 512
#: Fresh draws per side that :func:`population_gap` scores the critic on.
POPULATION_DRAWS = 50_000
#: Draws transported and scored at a time (5,000 x 3,072 float64 coordinates: 123 MB).
POPULATION_CHUNK = 5_000
#: Seed lines of up to this many seeds list each seed's value (and population gap).
SEEDS_LISTED = 10


@dataclass(frozen=True)
class Case:
    """One row: pair name, regime ("finite" or "sampler"), n per side (finite) and estimator options."""

    pair: str
    regime: str
    n: int = 0
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.pair}:{self.regime}:{self.n}" + (f":{opts}" if opts else "")


def parse_case(text: str) -> Case:
    """``pair:regime[:n[:key=value,...]]``."""
    parts = text.split(":")
    options = {}
    for item in (parts[3].split(",") if len(parts) > 3 and parts[3] else []):
        key, value = item.split("=")
        options[key] = value if key == "critic" else _number(value)
    return Case(parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 0, options)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def funnel_pair(name: str, seed: int = 0) -> RayMonotonePair | None:
    """The :class:`~wdist.datasets.FunnelPair` (or ``LatticePair``) of a named pair (None for a translation)."""
    if name.startswith("shift"):
        return None
    if name.startswith("lat"):  # lat{D}-{K}-{p}; the spacing p is 2 when left out
        dim, rank, *period = name[3:].split("-")
        return lattice_pair(int(dim), int(rank), float(period[0]) if period else 2.0, seed=seed)
    if name.startswith("k"):
        dim, funnels = map(int, name[1:].split("-"))
        return korotin_pair(dim, funnels, seed=seed)
    _, base, funnels, deg = name.split("-")
    return image_funnel_pair(base, int(funnels), float(deg), seed=seed)


def make_pair(name: str, seed: int = 0, device: str | torch.device | None = None):
    """(x sampler, y sampler, truth, truth standard error, funnel pair or None) of a named pair.

    ``device``: a funnel pair's samplers draw on it (``FunnelPair.samplers``); None, numpy on the CPU.
    """
    if name.startswith("shift"):
        sx, sy, truth = translation_samplers((int(name[5:]),), SHIFT_NORM, seed=seed)
        return sx, sy, truth, 0.0, None
    pair = funnel_pair(name, seed)
    truth, se = pair.truth(100_000 if pair.dim <= 1024 else 20_000)
    sx, sy = pair.samplers(seed=seed + 1, device=device)
    return sx, sy, truth, se, pair


def ray_diagnostic(critic: torch.nn.Module, pair: RayMonotonePair, scale: float, m: int = RAY_POINTS,
                   seed: int = 0) -> tuple[float, float]:
    """(mean ``||grad g||``, length-weighted mean cosine of ``grad g`` with the transport)
    at one uniform point of each of ``m`` fresh transport segments ``[y, T(y)]``.

    ``g = critic / scale``.  With s uniform on [0, 1],
    ``E[<grad g(y + s (x - y)), x - y>] = E[g(x) - g(y)]``, so the length-weighted mean
    slope is the critic's population gap over W1: it splits the shortfall of value/truth
    into a gradient norm below 1 (the network loses norm) and a cosine below 1 (it points
    off the optimal rays).
    """
    rng = np.random.default_rng([seed, 7])
    y = pair.sample_base(m, rng)
    x = pair.transport(y)
    z = y + rng.uniform(size=(m, 1)) * (x - y)
    pts = torch.from_numpy(z.astype(np.float32)).reshape(m, *pair.shape).requires_grad_(True)
    device = next(critic.parameters()).device
    (grad,) = torch.autograd.grad(critic(pts.to(device)).sum() / scale, pts)
    grad = grad.reshape(m, -1).double()
    seg = torch.from_numpy(x - y)
    length = seg.norm(dim=1)
    norm = grad.norm(dim=1)
    slope = (grad * seg).sum(dim=1) / length.clamp_min(1e-300)
    cosine = (length * slope).sum() / (length * norm).sum().clamp_min(1e-300)
    return float(norm.mean()), float(cosine)


def population_gap(critic: torch.nn.Module, pair: RayMonotonePair, scale: float, m: int = POPULATION_DRAWS,
                   seed: int = 0) -> tuple[float, float] | None:
    """(``mean g(x) - mean g(y)`` over ``m`` fresh draws per side, its standard error), or None.

    ``g = critic / scale``.  The estimate's test split never trained the critic, so its value
    is an unbiased estimate of this same gap, with the test split's standard error; this one
    has a fraction of it (50,000 draws, an MLP trained 300 steps at seed 0: 0.2 % of the
    truth against the test split's 1.5 % on the 16-funnel photo pair, 0.6 % against 2.5 % on
    Korotin's D=128 N=4 pair at 10k/side).  Over seeds, the mean of the population gaps
    estimates what the mean of the values estimates, the estimator's expected value, with that
    much less noise.  None for a finite base population (the digits): its fresh draws would be
    the training samples.  Gap and standard error as the estimator's own
    (:func:`wdist.training.gap_statistics`).
    """
    if getattr(pair.base, "population", None) is not None:
        return None
    rx, ry = (np.random.default_rng([seed, 11, side]) for side in (0, 1))
    device = next(critic.parameters()).device
    values: tuple[list, list] = ([], [])
    with torch.no_grad():
        for start in range(0, m, POPULATION_CHUNK):
            rows = min(POPULATION_CHUNK, m - start)
            y = pair.sample_base(rows, ry)
            for side, z in enumerate((pair.transport(pair.sample_base(rows, rx)), y)):
                batch = torch.from_numpy(z.astype(np.float32)).reshape(rows, *pair.shape).to(device)
                values[side].append(critic(batch).reshape(-1).double().cpu() / scale)
    return gap_statistics(torch.cat(values[0]), torch.cat(values[1]))


def centre_cone_gap(pair: FunnelPair, m: int = POPULATION_DRAWS, seed: int = 0) -> tuple[float, float]:
    """(gap, standard error) of the critic ``-||z||`` over W1's pairs ``(T(y), y)``.

    One funnel at the centre of the box the apices are drawn from, learned from nothing:
    what a critic that locates no apex gets (its gap over W1 is the length-weighted cosine
    of the rays from the box's centre with the true rays).  A fixed function's gap needs no
    independent sides, so each draw y of P is scored with its own transport: the mean of
    ``||y|| - ||T(y)||`` over ``m`` fresh draws, or exactly over a finite base population.
    """
    population = getattr(pair.base, "population", None)
    y = population if population is not None else pair.sample_base(m, np.random.default_rng([seed, 11, 2]))
    gain = np.linalg.norm(y, axis=1) - np.linalg.norm(pair.transport(y), axis=1)
    se = 0.0 if population is not None else float(gain.std(ddof=1) / np.sqrt(len(gain)))
    return float(gain.mean()), se


def run_case(case: Case, seed: int = 0, device: str | torch.device | None = None) -> dict:
    """One row.  ``device``: samplers draw on it and the estimate runs on it (gpu.py's
    ``tightness`` section); None, the committed rows' setting (numpy draws, ``device="auto"``)."""
    sx, sy, truth, truth_se, pair = make_pair(case.pair, seed, device)
    inputs = (sx(case.n).cpu(), sy(case.n).cpu()) if case.regime == "finite" else (sx, sy)
    start = time.perf_counter()
    res = wdist.estimate_w1(*inputs, progress=False, seed=seed, **({"device": device} if device else {}),
                            **case.options)
    seconds = time.perf_counter() - start
    return {
        "key": case.key, "pair": case.pair, "regime": case.regime, "n": case.n, "options": case.options,
        "seed": seed, "truth": truth, "truth_se": truth_se, "value": res.value, "lower": res.lower,
        "upper": res.upper, "ratio": res.value / truth, "lower_ok": bool(res.lower <= truth),
        "critic": res.settings.critic, "folds": res.settings.folds, "lipschitz": res.lipschitz,
        "input_noise": res.settings.input_noise, "candidates": res.settings.candidates,
        "candidate_seconds": res.settings.candidate_seconds, "start_gaps": res.settings.start_gaps,
        "steps": res.steps, "seconds": seconds, "train_ratio": res.train_value / truth,
        **_critic_diagnostics(pair, seed, res, truth),
    }


def _critic_diagnostics(pair: RayMonotonePair | None, seed: int, res, truth: float) -> dict:
    """The rays and population columns of a funnel pair's row (none for a translation)."""
    if pair is None or res.critic is None:
        return {}
    scale = max(1.0, res.lipschitz)
    grad_norm, cosine = ray_diagnostic(res.critic, pair, scale, seed=seed)
    row = {"ray_grad_norm": grad_norm, "ray_cosine": cosine}
    if isinstance(pair, FunnelPair):  # a lattice pair has no apices' box
        row["cone_ratio"] = centre_cone_gap(pair, seed=seed)[0] / truth
    gap = population_gap(res.critic, pair, scale, seed=seed)
    if gap is not None:
        row |= {"population_ratio": gap[0] / truth, "population_se_ratio": gap[1] / truth}
    return row


# The grid behind the targets (full mode) and a seconds-long smoke grid (--quick).
FULL = [
    *(f"k128-{n}:sampler" for n in (4, 16, 64, 256)),
    *(f"k128-4:finite:{n}" for n in (2000, 10000, 50000)),
    "k16-4:finite:10000", "k64-16:finite:10000",
    *(f"lat128-{k}-{p}:{regime}" for p in (8, 2) for k in (1, 16) for regime in ("finite:10000", "sampler")),
    "shift256:finite:5000",
    "img-patches16-1-10:finite:3000", "img-patches16-1-10:finite:3000:critic=bcop",
    "img-patches16-16-100:finite:3000", "img-patches16-16-100:finite:3000:critic=bcop",
    "img-digits-1-10:finite:1797", "img-digits-1-10:finite:1797:critic=bcop",
]
QUICK = ["k16-4:finite:400:steps=40,eval_every=20", "k16-4:sampler:0:steps=40,eval_every=20,test_size=500",
         "shift16:finite:400:steps=40,eval_every=20", "lat16-1-2:finite:400:steps=40,eval_every=20",
         "img-digits-1-10:finite:200:critic=bcop,steps=10,eval_every=5"]
SEEDS_CASE = "k16-4:finite:2000"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:+d}%"


def _row(r: dict) -> list[str]:
    published = PUBLISHED.get(tuple(map(int, r["pair"][1:].split("-")))) if r["pair"][:1] == "k" else None
    sort_out, gp = published if published else (None, None)
    regime = "sampler" if r["regime"] == "sampler" else f"finite, n={r['n']}"
    opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
    return [r["pair"], regime + (f" ({opts})" if opts else ""), f"{r['truth']:.4g} ± {r['truth_se']:.2g}",
            f"{r['value']:.4g} [{r['lower']:.4g}, {r['upper']:.4g}]", f"**{r['ratio']:.3f}**", _population_cell(r),
            f"{r['cone_ratio']:.3f}" if "cone_ratio" in r else "",
            "yes" if r["lower_ok"] else "**NO**", _critic_cell(r),
            f"{r['lipschitz']:.6f}", _rays_cell(r), f"{r['seconds']:.0f} s", _pct(sort_out), _pct(gp)]


def _critic_cell(r: dict) -> str:
    """The chosen critic, its input-noise level where validation chose one of several
    (rows recorded before the levels have no candidates and show the name alone), and folds."""
    levels = [c for c in r.get("candidates", {}) if c.startswith(f"{r['critic']} (input_noise=")]
    noise = f" (noise {r['input_noise']:g})" if levels else ""
    return f"{r['critic']}{noise}" + (f" x{r['folds']}" if r["folds"] > 1 else "")


def _population_cell(r: dict) -> str:
    return f"{r['population_ratio']:.3f} ± {r['population_se_ratio']:.3f}" if "population_ratio" in r else ""


def _rays_cell(r: dict) -> str:
    return f"{r['ray_grad_norm']:.3f} / {r['ray_cosine']:.3f}" if "ray_cosine" in r else ""


HEADER = ["pair", "regime", "true W1", "wdist [CI]", "value / truth", "population gap / truth",
          "centre cone / truth", "lower <= truth",
          "critic", "Lipschitz", "grad norm / cos on rays", "time", "Korotin sort-out", "Korotin WGAN-GP"]


def plot(rows: list[dict], path: Path) -> None:
    """Left: each row's value / truth down to its lower bound (red tick: the centre cone of a
    funnel pair, :func:`centre_cone_gap`).  Right: tightness against wall
    time, one marker per row, a colour per pair (filled: the default ``auto``; hollow: a named
    critic or other options), so the defaults' place on each pair's frontier shows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 0.35 * len(rows) + 1.5), dpi=100)
    FigureCanvasAgg(fig)
    ax, frontier = fig.subplots(1, 2, gridspec_kw={"width_ratios": (3, 2)})
    labels = [" ".join([r["pair"], r["regime"], str(r["n"] or "")]
                       + [f"{k}={v}" for k, v in r["options"].items()]) for r in rows]
    ratios = [r["ratio"] for r in rows]
    lows = [r["ratio"] - r["lower"] / r["truth"] for r in rows]
    ax.barh(range(len(rows)), ratios, xerr=[lows, [0] * len(rows)], color="tab:blue", alpha=0.8)
    cones = [(i, r["cone_ratio"]) for i, r in enumerate(rows) if "cone_ratio" in r]
    if cones:
        ax.scatter([c for _, c in cones], [i for i, _ in cones], marker="|", s=120, color="tab:red",
                   zorder=3, label="centre cone -||z||, trained on nothing")
        ax.legend(fontsize=7, loc="lower right")
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("certified estimate / true W1 (bar: value, whisker: down to the lower bound)")
    ax.set_xlim(0, 1.1)
    _plot_frontier(frontier, rows)
    fig.tight_layout()
    fig.savefig(path)


def _plot_frontier(ax, rows: list[dict]) -> None:
    """value / truth against seconds (log), one colour per (pair, regime, n)."""
    groups = sorted({(r["pair"], r["regime"], r["n"]) for r in rows}, key=str)
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    markers = {g: "osD^v<>"[i // 10 % 7] for i, g in enumerate(groups)}
    for r in rows:
        g = (r["pair"], r["regime"], r["n"])
        default = not r["options"]
        ax.scatter(max(r["seconds"], 0.1), r["ratio"], marker=markers[g], s=36, edgecolors=colours[g],
                   facecolors=colours[g] if default else "none", linewidths=1.2)
    for g in groups:
        ax.scatter([], [], marker=markers[g], color=colours[g], label=" ".join(str(v) for v in g if v))
    ax.set_xscale("log")
    ax.axhline(1.0, color="black", lw=1)
    ax.set_xlabel("wall time of the estimate, s (log; 2 CPU cores)")
    ax.set_ylabel("value / true W1 (filled: default auto; hollow: other options)")
    ax.legend(fontsize=6, loc="lower left")


def seeds_report(k: int, case_text: str) -> tuple[str, dict]:
    """(the seed line of ``k`` seeds of one case, its seed-0 run: the case's row, as ``--case``
    would run it)."""
    case = parse_case(case_text)
    runs = [run_case(case, seed) for seed in range(k)]
    ok = sum(r["lower_ok"] for r in runs)
    ratios = np.array([r["ratio"] for r in runs])
    # Up to 10 seeds each value and choice is listed: how many pass a target, and which critic
    # (or noise level) validation picked, are what a mean hides.
    each = (f"; per seed {', '.join(f'{r:.3f}' for r in ratios)}; chosen "
            + ", ".join(f"{name} x{n}" for name, n in Counter(_critic_cell(r) for r in runs).items())
            if k <= SEEDS_LISTED else "")
    return (f"Honesty: {case.key}, {k} seeds (pair, samples and training all re-drawn): lower <= truth in "
            f"{ok}/{k} ({100 * ok / k:.0f}%); value / truth {ratios.mean():.3f} ± {ratios.std(ddof=1):.3f} "
            f"(min {ratios.min():.3f}, max {ratios.max():.3f}){each}{_population_summary(runs)}; "
            f"{sum(r['seconds'] for r in runs):.0f} s in all."), runs[0]


def _population_summary(runs: list[dict]) -> str:
    """The chosen critics' population gaps over the truth, mean ± sd over seeds, where every
    run has one: the same expected value as the values' mean, without the test splits' noise."""
    if not runs or not all("population_ratio" in r for r in runs):
        return ""
    pop = np.array([r["population_ratio"] for r in runs])
    each = f" ({', '.join(f'{p:.3f}' for p in pop)})" if len(runs) <= SEEDS_LISTED else ""
    spread = f" ± {pop.std(ddof=1):.3f}" if len(runs) > 1 else ""
    return f"; population gap / truth {pop.mean():.3f}{spread}{each}"


def _cpu_name() -> str:
    """The CPU's model name (Linux), else "CPU": the same run took 181 s on one 2-core
    machine and 289 s on another (the photo-patch default row)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    parser.add_argument("--case", action="append", help="pair:regime[:n[:opts]] (repeatable); merged into saved rows")
    parser.add_argument("--seeds", type=int, default=0,
                        help="honesty check: this many seeds of one pair (seed 0 is also saved as its row)")
    parser.add_argument("--seeds-case", default=SEEDS_CASE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", action="store_true",
                        help="rewrite the .md and .png from the saved .json (after editing it); runs nothing")
    args = parser.parse_args()
    stem = "known_truth-quick" if args.quick else "known_truth"
    json_path = args.out / f"{stem}.json"
    # --case and --seeds add to the saved results; the full grid starts afresh.
    merge = json_path.exists() and (args.case or args.seeds or args.render)
    saved = json.loads(json_path.read_text()) if merge else {"rows": {}}
    if not isinstance(saved.get("seeds", {}), dict):  # one honesty line before: keyed since
        saved["seeds"] = {}
    if args.render and not merge:
        raise SystemExit(f"--render: no saved results at {json_path}")
    default_cases = [] if args.render or args.seeds else QUICK if args.quick else FULL
    cases = [parse_case(c) for c in (args.case or default_cases)]
    for case in cases:
        row = run_case(case)
        saved["rows"][row["key"]] = row
        print(" | ".join(_row(row)), flush=True)
    if args.seeds:
        line, row = seeds_report(args.seeds, args.seeds_case)
        saved.setdefault("seeds", {})[parse_case(args.seeds_case).key] = line
        saved["rows"][row["key"]] = row  # seed 0 is the row: no second run of it
        print(line)
    if not args.render:  # rendering reads the saved rows and machine: nothing to write back
        saved["machine"] = (f"{_cpu_name()} ({platform.machine()}), {torch.get_num_threads()} threads, "
                            f"torch {torch.__version__}, wdist {wdist.__version__}")
        args.out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(saved, indent=1) + "\n")
    rows = list(saved["rows"].values())
    notes = (f"Machine of the last run: {saved['machine']} (rows merged from earlier runs keep their "
             f"times, which may come from another 2-core machine: benchmarks/README.md says which).  "
             f"Command: `.venv/bin/python benchmarks/known_truth.py"
             f"{' --quick' if args.quick else ''}` (rows merged from `--case` runs).  Default "
             f"`estimate_w1` settings unless the regime names options.  Korotin et al.'s columns: their "
             f"published relative error at the same (D, N) (fresh samples, 25k+ steps).\n\n"
             + "\n\n".join(saved.get("seeds", {}).values()))
    publish(args.out / f"{stem}.md", "Tightness against a known truth", notes, HEADER, [_row(r) for r in rows])
    if rows:
        plot(rows, args.out / f"{stem}.png")


if __name__ == "__main__":
    main()
