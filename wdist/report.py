"""Every artefact of a result: summary lines, the JSON payload, the training
curve and witness grid (PNG), the Markdown report, and the critic itself
(:func:`save_critic` / :func:`load_critic`, safetensors).

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no
display needed) at fixed pixel sizes; matplotlib is imported when a figure is
drawn (it takes a second to import).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from ._version import __version__
from .critics import CRITICS, CrossFitCritic
from .data import Samples, critic_values
from .lipschitz import lipschitz_bound
from .results import W1Result

#: ``save_critic``'s name for the mean of cross-fitted critics (``estimate_w1(folds=K)``).
CROSS_FIT = "crossfit"

__all__ = [
    "CURVE_SIZE_PX", "plot_training_curve", "certified_scores", "WitnessRow", "witness_rows",
    "plot_witness_grid", "markdown_report", "interpretation", "human_summary", "command_payload",
    "save_critic", "load_critic", "write_file", "write_json", "OutputFiles", "write_outputs",
]

#: Pixel size (width, height) of the training-curve PNG.
CURVE_SIZE_PX = (800, 450)
_DPI = 100


def write_file(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """``writer(path)`` after creating the parent folder; ``ValueError`` naming the path on failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_json(path: str | Path, payload: dict) -> Path:
    """``payload`` as indented JSON."""
    return write_file(path, lambda p: p.write_text(json.dumps(payload, indent=2) + "\n"))


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure  # matplotlib takes a second to import: only to draw

    return Figure(figsize=(width_in, height_in), dpi=_DPI)


def _save(fig, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return write_file(path, lambda p: fig.savefig(p, dpi=_DPI, format="png"))


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
    fig = _figure(CURVE_SIZE_PX[0] / _DPI, CURVE_SIZE_PX[1] / _DPI)
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
    critic = result.settings.critic if result.settings is not None else ""
    ax.set_title(title or f"W1 estimate, {critic} critic (Lipschitz <= {result.lipschitz:.4g})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- witnesses
def certified_scores(
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
    samples = Samples(dataset, "images", num_workers)
    values = critic_values(critic, samples, torch.arange(len(samples)), batch_size, torch.device(device),
                           progress, desc)
    return (values / max(1.0, float(lipschitz))).numpy()


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
    fig = _figure(1.6 + 1.2 * cols, 0.6 + 1.45 * len(rows))
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


# ------------------------------------------------------------------ summary
def interpretation(result: W1Result) -> str:
    """One sentence on what the interval says."""
    one_sided = 100 * (1 - (1 - result.confidence) / 2)
    if result.lower > 0:
        return (f"The folders differ: the interval excludes 0, and W1 >= {result.lower:.4g} "
                f"with {one_sided:.3g}% confidence (the estimate is a certified lower bound).")
    return ("No difference detected: the interval includes 0 (this does not prove W1 = 0; "
            "more images or steps may reveal one).")


def human_summary(result: W1Result, folders: dict) -> list[str]:
    """A few lines for people, printed after the W1 line (``folders``: a folder-pair description)."""
    c, h, w = folders["image_shape"]
    s = result.settings
    return [
        f"  DIR_A {folders['dir_a']} ({folders['n_a']} images) vs DIR_B {folders['dir_b']} ({folders['n_b']} "
        f"images), as {c}x{h}x{w} {folders['mode']} values in [0, 1]: W1 is the L2 distance over {c * h * w} values",
        f"  {s.critic} critic, {result.steps} steps (best at {result.best_step}), test split "
        f"{result.n_test[0]} + {result.n_test[1]} images, {result.seconds:.1f} s on {s.device}"
        + (f" x {s.world_size} processes" if s.world_size > 1 else ""),
        f"  {interpretation(result)}",
    ]


def command_payload(body: dict, name: str, folders: dict, options: dict) -> dict:
    """The JSON of a command: ``body`` plus the command's settings under ``"command"``.

    Paths among ``options`` become strings.  Built once per command and
    written wherever JSON is asked for (``--json``, the report's ``result.json``).
    """
    opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    return {**body, "command": {"name": name, "wdist_version": __version__, **folders, **opts}}


# ------------------------------------------------------------------ critic
def save_critic(result: W1Result, path: str | Path) -> Path:
    """The critic's ``state_dict`` as safetensors (contiguous copies: no shared storage).

    The metadata names the critic and the sample shape, so that
    :func:`load_critic` can rebuild it, and keeps the module's printed layers
    (``architecture``), so that a wdist whose named critic has other layers
    refuses the file instead of loading its weights into another function; the
    Lipschitz bound stored beside them is for people only (:func:`load_critic`
    recomputes it).
    """
    from safetensors.torch import save_file  # imported on use: start-up time

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in result.critic.state_dict().items()}
    cross_fitted = isinstance(result.critic, CrossFitCritic)
    meta = {"critic": CROSS_FIT if cross_fitted else str(result.settings.critic),
            "lipschitz": repr(result.lipschitz),
            "sample_shape": json.dumps(result.settings.sample_shape), "wdist_version": __version__,
            "architecture": str(result.critic)}
    if cross_fitted:  # the mean of the folds' critics: each fold's architecture, in order
        meta["fold_critics"] = json.dumps(result.settings.fold_critics)
    return write_file(path, lambda p: save_file(state, str(p), metadata=meta))


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return meta, load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"{path}: not a readable safetensors critic ({exc})") from None


def _sample_shape(path: Path, text: str | None) -> tuple[int, ...]:
    try:
        shape = tuple(json.loads(text)) if text else ()
    except (TypeError, ValueError):
        shape = ()
    if len(shape) not in (1, 3) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"{path}: metadata sample_shape {text!r} is not (D,) or (C, H, W)")
    return shape


def load_critic(path: str | Path) -> nn.Module:
    """Rebuild a critic written by :func:`save_critic` (``wdist estimate --save-critic``).

    The architecture comes from the metadata (critic name and sample shape;
    the anchors critic's anchors are in the weights), the weights from the
    file.  The certificate is **recomputed** from the loaded weights with
    :func:`wdist.lipschitz_bound`, never read from the metadata.

    Returns
    -------
    nn.Module
        The critic ``f`` in eval mode, with two attributes: ``sample_shape``
        (the input shape it was trained on) and ``lipschitz`` (the certified
        bound of the weights as loaded); ``f / max(1, lipschitz)`` is
        1-Lipschitz, so its gap on fresh samples is an honest lower bound of W1.

    Raises
    ------
    ValueError
        Naming ``path``: unreadable file, a critic that is not one of
        :data:`wdist.critics.CRITICS`, bad metadata, or weights that do not fit.
    """
    path = Path(path)
    meta, state = _read_safetensors(path)
    name = meta.get("critic")
    if name == CROSS_FIT:
        return _load_cross_fit(path, meta, state)
    shape = _sample_shape(path, meta.get("sample_shape"))
    critic = _build_named(path, name, shape, state)
    _check_architecture(path, meta, critic)
    return _with_weights(path, critic, shape, state, f"a {name} critic")


def _weightless_layers(critic: nn.Module) -> list[str]:
    """Names of the layers whose function the weights do not pin down (activations,
    downsampling): leaves without parameters or buffers, other than ``Flatten`` and
    the parametrizations that build a layer's weight from its parameters."""
    built = {id(part) for m in critic.modules() if isinstance(m, parametrize.ParametrizationList)
             for part in m.modules()}
    return sorted({type(m).__name__ for m in critic.modules()
                   if id(m) not in built and not isinstance(m, nn.Flatten) and not any(True for _ in m.children())
                   and not any(True for _ in m.parameters(recurse=False))
                   and not any(True for _ in m.buffers(recurse=False))})


def _check_architecture(path: Path, meta: dict, critic: nn.Module) -> None:
    """Refuse a file whose saved layers differ from the rebuilt ones.

    Activations have no weights, so a critic saved with MaxMin loads without
    error into a GroupSort network (the convolutional critics' default since
    issue 14) and would score data with a function that was never trained.
    A file without the record (written before wdist kept it) is refused too
    when the critic has such layers; one whose function its weights fix
    (linear, anchors) still loads.
    """
    saved = meta.get("architecture")
    if saved is None:
        unchecked = _weightless_layers(critic)
        if unchecked:
            raise ValueError(f"{path}: saved without a record of its layers (by an older wdist), so its "
                             f"{', '.join(unchecked)} layers cannot be checked against this wdist's "
                             f"{meta.get('critic')!r} critic; rebuild the layers it was trained with and call "
                             "load_state_dict, or re-run the estimate")
        return
    if saved == str(critic):
        return
    diff = next((f"{a.strip()!r} here, {b.strip()!r} in the file"
                 for a, b in zip(str(critic).splitlines(), saved.splitlines()) if a != b), "a different depth")
    raise ValueError(f"{path}: saved by a wdist whose {meta.get('critic')!r} critic has other layers ({diff}); "
                     "rebuild the saved architecture and call load_state_dict")


def _build_named(path: Path, name: str, shape: tuple[int, ...], state: dict, prefix: str = "") -> nn.Module:
    if name not in CRITICS:
        raise ValueError(f"{path}: critic {name!r} in the metadata is not one of wdist's named critics "
                         f"({', '.join(CRITICS)}); rebuild it and call load_state_dict instead")
    spec = CRITICS[name]
    anchors = state.get(f"{prefix}0.anchors") if spec.needs_anchors else None
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
        return spec.build(shape, anchors)


def _with_weights(path: Path, critic: nn.Module, shape: tuple[int, ...], state: dict, what: str) -> nn.Module:
    """Load ``state`` into ``critic``, certify the loaded weights, eval mode."""
    try:
        critic.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit {what} for {shape}: "
                         f"{str(exc).splitlines()[0]}") from None
    critic.eval()
    critic.sample_shape = shape
    critic.lipschitz = lipschitz_bound(critic, shape)
    return critic


def _load_cross_fit(path: Path, meta: dict, state: dict) -> nn.Module:
    """A :class:`~wdist.critics.CrossFitCritic` (``estimate_w1(folds=K)``): its folds' critics."""
    shape = _sample_shape(path, meta.get("sample_shape"))
    try:
        names = json.loads(meta.get("fold_critics", ""))
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or "scales" not in state:
        raise ValueError(f"{path}: a cross-fitted critic needs its fold_critics metadata and scales")
    critics = [_build_named(path, n, shape, state, f"critics.{k}.") for k, n in enumerate(names)]
    critic = CrossFitCritic(critics, state["scales"].tolist())
    _check_architecture(path, meta, critic)
    return _with_weights(path, critic, shape, state, f"the cross-fitted critics {names}")


# ---------------------------------------------------------------- the files
def _report_settings(result: W1Result, payload: dict) -> list[tuple[str, Any]]:
    c, s = payload["command"], result.settings
    return [
        ("DIR_A", f"`{c['dir_a']}` ({c['n_a']} images, {len(c['skipped_a'])} skipped)"),
        ("DIR_B", f"`{c['dir_b']}` ({c['n_b']} images, {len(c['skipped_b'])} skipped)"),
        ("compared as", f"{'x'.join(map(str, c['image_shape']))} {c['mode']} in [0, 1] ({c['size_rule']})"),
        ("critic", s.critic), ("steps", f"{result.steps} (best {result.best_step})"),
        ("batch size", s.batch_size), ("learning rate", s.lr),
        ("split train / validation / test", f"{result.n_train} / {result.n_validation} / {result.n_test}"),
        ("train-split gap (optimistic)", f"{result.train_value:.6g}"),
        ("seed", s.seed), ("device", s.device),
        ("time", f"{result.seconds:.1f} s"), ("wdist", __version__),
    ]


def write_report(directory: Path, result: W1Result, payload: dict, rows: Sequence[WitnessRow]) -> dict[str, Path]:
    """``report.md`` with ``curve.png``, ``witness.png`` and ``result.json`` in ``directory``."""
    text = markdown_report(result, _report_settings(result, payload), curve="curve.png",
                           witness="witness.png", witnesses=rows, interpretation=interpretation(result))
    return {
        "report": write_file(directory / "report.md", lambda p: p.write_text(text)),
        "training curve": plot_training_curve(result, directory / "curve.png"),
        "witness grid": plot_witness_grid(rows, directory / "witness.png"),
        "JSON": write_json(directory / "result.json", payload),
    }


@dataclass
class OutputFiles:
    """Files written after an estimate (each None: not asked for)."""

    json: Path | None = None
    plot: Path | None = None
    save_critic: Path | None = None
    witness: Path | None = None
    report: Path | None = None


def write_outputs(result: W1Result, payload: dict, out: OutputFiles,
                  witnesses: Callable[[], list[WitnessRow]]) -> dict[str, Path]:
    """Every file asked for in ``out``; returns {what: path}.

    ``witnesses()`` scores the images (only called when a witness grid or a
    report is asked for).
    """
    written: dict[str, Path] = {}
    if out.json:
        written["JSON"] = write_json(out.json, payload)
    if out.plot:
        written["training curve"] = plot_training_curve(result, out.plot)
    if out.save_critic:
        written["critic (safetensors)"] = save_critic(result, out.save_critic)
    rows = witnesses() if (out.witness or out.report) else []
    if out.witness:
        written["witness grid"] = plot_witness_grid(rows, out.witness)
    if out.report:
        for what, path in write_report(out.report, result, payload, rows).items():
            written.setdefault(what, path)
    return written
