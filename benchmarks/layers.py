"""Cost of a certified convolution against nn.Conv2d of the same shape.

For each (channels, image size, batch) it times, in one process and one run:

* train step: forward + backward + Adam step (+ kernel construction for
  BCOP, + the retraction wdist's trainer applies after each optimiser step);
* eval forward: BCOP uses its cached kernel.

and prints the ratios against Conv2d.  When installed (``make bench-install``),
orthogonium's ``AdaptiveOrthoConv2d`` (AOC, Boissin et al. 2025) and
deel-torchlip's ``SpectralConv2d`` are timed the same way, side by side, and
the BCOP / AOC train ratio is reported (< 1: wdist is faster).  The Conv2d
baseline pads with the same code as BCOPConv2d (``wdist.nn.circular_pad``,
whose backward is 4x cheaper than torch's circular ``F.pad`` at 512 x 32 x
32 x 32), so every ratio isolates the cost of the constraint; AOC and
deel-torchlip pad with torch's own.  Run alone (two torch processes on two
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

from wdist.critics import bcop_critic
from wdist.nn import BCOPConv2d, BjorckLinear, retract_
from wdist.nn.sameconv import SameConv2d
from wdist.training import make_adam

from _markdown import publish

SHAPES = [  # (channels, size, batch)
    (64, 32, 128),
    (256, 8, 64),
    (512, 4, 64),
]
QUICK_SHAPES = [(64, 16, 32), (256, 4, 16)]
#: Full critic step: the default image critic on (3, 32, 32) images, batch per side.
CRITIC_SHAPES = [((3, 32, 32), 256)]
QUICK_CRITIC_SHAPES = [((3, 16, 16), 64)]


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
        x.grad = None
        layer(x).square().mean().backward()
        opt.step()
        if retract:
            retract_(layer)

    return step


def _other_layers(channels: int) -> dict[str, nn.Module]:
    """Optional comparisons: skipped (with a note) when the package is missing."""
    layers: dict[str, nn.Module] = {}
    try:
        from orthogonium.layers.conv.AOC import AdaptiveOrthoConv2d

        layers["aoc"] = AdaptiveOrthoConv2d(channels, channels, 3, padding="same", padding_mode="circular")
    except ImportError:
        pass
    try:
        from deel.torchlip import SpectralConv2d

        layers["torchlip"] = SpectralConv2d(channels, channels, 3, padding=1, padding_mode="circular")
    except ImportError:
        pass
    return layers


def measure(channels: int, size: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    # A layer inside a network also back-propagates to its input; only the
    # first layer of a critic does not ("leaf" rows).
    x_deep = torch.randn(batch, channels, size, size, requires_grad=True)
    x = x_deep.detach()
    layers = {
        "conv": (SameConv2d(channels, channels, 3), False),
        "bcop": (BCOPConv2d(channels, channels, 3), True),
    }
    layers.update({name: (layer, False) for name, layer in _other_layers(channels).items()})
    row = {"channels": channels, "size": size, "batch": batch}
    for name, (layer, retract) in layers.items():
        layer.train()
        opt = make_adam(layer.parameters(), 1e-3)
        row[f"{name}_train"] = _time(_train_step(layer, x_deep, opt, retract), repeats)
        if name in ("conv", "bcop"):
            row[f"{name}_train_leaf"] = _time(_train_step(layer, x, opt, retract), repeats)
        layer.eval()
        with torch.no_grad():
            row[f"{name}_eval"] = _time(lambda: layer(x), repeats)
    for name in layers:
        row[f"{name}_train_ratio"] = row[f"{name}_train"] / row["conv_train"]
        row[f"{name}_eval_ratio"] = row[f"{name}_eval"] / row["conv_eval"]
    row["train_ratio"], row["eval_ratio"] = row["bcop_train_ratio"], row["bcop_eval_ratio"]
    row["train_leaf_ratio"] = row["bcop_train_leaf"] / row["conv_train_leaf"]
    return row


def unconstrained_twin(critic: nn.Sequential) -> nn.Sequential:
    """The same architecture with plain convolutions / nn.Linear in place of the certified layers.

    The convolutions pad exactly like BCOPConv2d (same padding code), so the
    ratio isolates the cost of the constraint.
    """
    layers = []
    for layer in critic:
        if isinstance(layer, BCOPConv2d):
            layer = SameConv2d(layer.in_channels, layer.out_channels, layer.kernel_size[0],
                               padding=layer.padding_mode)
        elif isinstance(layer, BjorckLinear):
            layer = nn.Linear(layer.in_features, layer.out_features)
        layers.append(layer)
    return nn.Sequential(*layers)


def measure_critic(shape: tuple[int, int, int], batch: int, repeats: int) -> dict:
    """One training step of the trainer (both sides in one forward, Adam, retraction)."""
    torch.manual_seed(0)
    x = torch.rand(2 * batch, *shape)
    certified = bcop_critic(shape)
    row = {"shape": shape, "batch": batch}
    for name, critic, retract in (("plain", unconstrained_twin(certified), False), ("bcop", certified, True)):
        opt = make_adam(critic.parameters(), 1e-3)

        def step(critic=critic, opt=opt, retract=retract):
            out = critic(x).reshape(-1)
            gap = out[:batch].mean() - out[batch:].mean()
            opt.zero_grad(set_to_none=True)
            (-gap).backward()
            opt.step()
            if retract:
                retract_(critic)

        critic.train()
        row[f"{name}_train"] = _time(step, repeats)
    row["ratio"] = row["bcop_train"] / row["plain_train"]
    return row


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars: train-step ratio vs Conv2d per shape and layer (1 = Conv2d's cost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("bcop", "aoc", "torchlip") if f"{n}_train" in rows[0]]
    labels = {"bcop": "wdist BCOPConv2d", "aoc": "orthogonium AOC", "torchlip": "deel-torchlip SpectralConv2d"}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [r[f"{name}_train_ratio"] for r in rows], width, label=labels[name])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)), [f"{r['channels']} ch, {r['size']}x{r['size']}, b{r['batch']}" for r in rows])
    ax.set_ylabel("train step / Conv2d train step")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Certified convolutions: cost of a training step (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "layers.md")
    args = parser.parse_args()
    shapes, repeats = (QUICK_SHAPES, 5) if args.quick else (SHAPES, 5)
    rows = [measure(*shape, repeats) for shape in shapes]
    notes = (f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Command: `python benchmarks/layers.py"
             f"{' --quick' if args.quick else ''}`. Best of 3 runs of {repeats} steps. Train step: forward + "
             "backward (to the input too, as for any layer but the first) + fused Adam (+ retraction for BCOP).")
    header = ["channels", "size", "batch", "Conv2d train ms", "BCOP train ms", "train ratio",
              "first-layer train ratio (no input gradient)", "Conv2d eval ms", "BCOP eval ms", "eval ratio"]
    cells = [[str(r["channels"]), f"{r['size']}x{r['size']}", str(r["batch"]), f"{1e3 * r['conv_train']:.1f}",
              f"{1e3 * r['bcop_train']:.1f}", f"{r['train_ratio']:.2f}x", f"{r['train_leaf_ratio']:.2f}x",
              f"{1e3 * r['conv_eval']:.1f}", f"{1e3 * r['bcop_eval']:.1f}", f"{r['eval_ratio']:.2f}x"]
             for r in rows]
    others = [name for name in ("aoc", "torchlip") if f"{name}_train" in rows[0]]
    if others:
        labels = {"aoc": "orthogonium AOC", "torchlip": "deel-torchlip SpectralConv2d"}
        header += [f"{labels[n]} train / eval ratio" for n in others] + ["BCOP / AOC train"] * ("aoc" in others)
        for cell, r in zip(cells, rows):
            cell += [f"{r[f'{n}_train_ratio']:.2f}x / {r[f'{n}_eval_ratio']:.2f}x" for n in others]
            if "aoc" in others:
                cell.append(f"{r['bcop_train'] / r['aoc_train']:.2f}")
        notes += " Ratios are against nn.Conv2d measured in the same run."
    else:
        notes += " orthogonium / deel-torchlip not installed (`make bench-install`): comparison skipped."
    for r in rows:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    text = publish(args.out, "BCOPConv2d vs nn.Conv2d and other orthogonal convolutions (k=3, circular padding)",
                   notes, header, cells)
    critics = [measure_critic(*shape, repeats) for shape in (QUICK_CRITIC_SHAPES if args.quick else CRITIC_SHAPES)]
    critic_cells = [["x".join(map(str, r["shape"])), f"{r['batch']} + {r['batch']}", f"{1e3 * r['plain_train']:.1f}",
                     f"{1e3 * r['bcop_train']:.1f}", f"{r['ratio']:.2f}x"] for r in critics]
    text += "\n" + publish(
        args.out.with_name(args.out.stem + "-critic.md"),
        "Default image critic (wdist.critics.bcop_critic): full training step vs the same network unconstrained",
        "Forward over both sides' batches, backward, Adam step; the certified critic also retracts its "
        "free parameters (as wdist's trainer does). The unconstrained twin has nn.Conv2d / nn.Linear of "
        "the same shapes and the same activations.",
        ["sample shape", "batch", "unconstrained ms", "certified ms", "ratio"], critic_cells)
    args.out.write_text(text)
    plot(rows, args.out.with_suffix(".png"))
    args.out.with_name(args.out.stem + "-critic.md").unlink()


if __name__ == "__main__":
    main()
