"""Training-curve plot, witness-image grid and Markdown report of an estimate.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no
display needed) at fixed pixel sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

__all__ = [
    "CURVE_SIZE_PX", "plot_training_curve", "critic_scores", "WitnessRow", "witness_rows",
    "plot_witness_grid", "markdown_report",
]

#: Pixel size (width, height) of the training-curve PNG.
CURVE_SIZE_PX = (800, 450)
_DPI = 100


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI, format="png")
    return path


# ------------------------------------------------------------------- curve
def plot_training_curve(result, path: str | Path, title: str | None = None) -> Path:
    """PNG of the training and validation (held-out) gaps over the steps.

    Parameters
    ----------
    result : W1Result
        Its ``history`` gives the curves; the band is the ``confidence``
        interval of the validation gap, the dashed line and grey band the final
        test-split value and its interval.
    path : path
        Output PNG, :data:`CURVE_SIZE_PX` pixels.
    title : str, optional

    Returns
    -------
    Path
    """
    fig = Figure(figsize=(CURVE_SIZE_PX[0] / _DPI, CURVE_SIZE_PX[1] / _DPI), dpi=_DPI)
    ax = fig.add_subplot(1, 1, 1)
    hist = result.history
    z = NormalDist().inv_cdf(0.5 + result.confidence / 2)
    pct = round(100 * result.confidence)
    if hist:
        steps = np.array([h["step"] for h in hist], dtype=float)
        val = np.array([h["val_gap"] for h in hist], dtype=float)
        se = np.array([h["val_se"] for h in hist], dtype=float)
        ax.plot(steps, [h["train_gap"] for h in hist], color="tab:orange", marker=".", ms=3,
                label="training gap")
        ax.plot(steps, val, color="tab:blue", marker="o", ms=3, label="held-out (validation) gap")
        ax.fill_between(steps, val - z * se, val + z * se, color="tab:blue", alpha=0.2,
                        label=f"validation {pct}% CI")
    ax.axhline(result.value, color="black", ls="--", lw=1, label=f"test estimate {result.value:.4g}")
    ax.axhspan(result.lower, result.upper, color="grey", alpha=0.2, label=f"test {pct}% CI")
    if result.best_step:
        ax.axvline(result.best_step, color="tab:green", ls=":", lw=1, label="chosen critic")
    ax.set_xlabel("training step")
    ax.set_ylabel("gap  E_A f - E_B f")
    critic = result.settings.get("critic", "")
    ax.set_title(title or f"W1 estimate, {critic} critic (Lipschitz <= {result.lipschitz:.4g})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- witnesses
@torch.no_grad()
def critic_scores(
    critic: nn.Module,
    dataset: Dataset,
    *,
    lipschitz: float,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "scoring images",
) -> np.ndarray:
    """Certified critic values ``f(x) / max(1, lipschitz)`` of every item, float64."""
    critic.eval()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    out = []
    for batch in tqdm(loader, desc=desc, unit="batch", disable=None if progress else True, leave=False):
        out.append(critic(batch.to(device)).reshape(-1).double().cpu())
    return (torch.cat(out) / max(1.0, float(lipschitz))).numpy()


@dataclass
class WitnessRow:
    """One row of the witness grid: images of one folder with their scores."""

    label: str
    images: list[np.ndarray] = field(default_factory=list)  # (C, H, W) in [0, 1]
    scores: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def witness_rows(
    side: str, dataset, scores: np.ndarray, names: Sequence[str], k: int = 8
) -> list[WitnessRow]:
    """The ``k`` highest and ``k`` lowest scored images of one folder.

    High scores look like folder A to the critic, low scores like folder B.
    """
    order = np.argsort(-scores, kind="stable")
    k = min(k, len(order))
    rows = []
    for label, idx in ((f"{side}: highest", order[:k]), (f"{side}: lowest", order[::-1][:k])):
        row = WitnessRow(label)
        for i in idx:
            row.images.append(np.asarray(dataset[int(i)], dtype=np.float32))
            row.scores.append(float(scores[i]))
            row.names.append(str(names[i]))
        rows.append(row)
    return rows


def _show(ax, image: np.ndarray) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_witness_grid(rows: Sequence[WitnessRow], path: str | Path, title: str | None = None) -> Path:
    """PNG grid: one row per :class:`WitnessRow`, each image titled with its score."""
    cols = max(len(r.images) for r in rows)
    fig = Figure(figsize=(1.6 + 1.2 * cols, 0.6 + 1.45 * len(rows)), dpi=_DPI)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(row.images):
                ax.axis("off")
                continue
            _show(ax, row.images[c])
            ax.set_title(f"{row.scores[c]:+.3g}", fontsize=8)
        axes[r][0].set_ylabel(row.label, fontsize=8)
    fig.suptitle(title or "critic score f/max(1,L): high = looks like A, low = looks like B", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------- markdown
def _table(rows: Sequence[tuple[str, Any]]) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)


def _witness_lists(rows: Sequence[WitnessRow]) -> str:
    parts = []
    for row in rows:
        items = ", ".join(f"`{n}` ({s:+.3g})" for n, s in zip(row.names, row.scores))
        parts.append(f"- **{row.label}**: {items}")
    return "\n".join(parts)


def markdown_report(
    result,
    settings: Sequence[tuple[str, Any]],
    *,
    curve: str | None = None,
    witness: str | None = None,
    witnesses: Sequence[WitnessRow] = (),
    interpretation: str = "",
) -> str:
    """Markdown text: the W1 line, interpretation, settings table, curve and witness grid.

    ``curve`` and ``witness`` are image links relative to the report file.
    """
    out = ["# wdist report", "", "```", result.summary(), "```", ""]
    if interpretation:
        out += [interpretation, ""]
    out += ["## Settings", "", _table(settings), ""]
    if curve:
        out += ["## Training curve", "", f"![training curve]({curve})", "",
                "Training and held-out (validation) gap of the critic over the steps; the "
                "grey band is the final test-split estimate with its confidence interval.", ""]
    if witness:
        out += ["## Witness images", "", f"![witness images]({witness})", "",
                "Images of each folder that the certified critic scores highest (most like A) "
                "and lowest (most like B): where the two sets differ most.", "",
                _witness_lists(witnesses), ""]
    return "\n".join(out)
