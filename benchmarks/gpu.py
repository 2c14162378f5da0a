"""The one device check of issue 15: correctness, layer costs, end-to-end time and DDP on one GPU.

A GPU is lent only to some sessions, for about 15 minutes of device time in
all, so everything is prepared here and run as one script there:

    python benchmarks/gpu.py                          # on the GPU machine: 470 s budget
    python benchmarks/gpu.py --quick --device cpu     # the same code paths at tiny sizes, ~1 min
    python benchmarks/gpu.py --only layers,levers --budget 200   # rerun some sections

(``bash benchmarks/gpu_device.sh`` installs the carried wheels and runs the
first line; benchmarks/README.md has the exact device call.)

Sections, in this order (each against one global deadline: a section that
would not fit in what is left is skipped with a note; an error in one is
recorded and the others still run):

``env``          card, driver, torch / CUDA / cuDNN / NCCL versions, the CUDA levers
``folders``      writes 2 x 50,000 3x32x32 and 2 x 10,000 3x64x64 PNG photo crops
``certificate``  BCOP critic trained on the device: singular values of every
                 constrained layer, ``lipschitz_bound``; the same estimate on the CPU
                 (same seed) against the device's interval; the device-trained
                 weights evaluated on both (TF32 on and off)
``layers``       BCOP / Conv2d train-step and eval ratios at ``layers.py``'s shapes,
                 batch 64 and 256, fp32 and bf16 autocast; the default critic's step
``e2e32``        ``wdist estimate`` on 2 x 50,000 32x32 PNGs, defaults: wall time,
                 images/s, peak GPU memory, the value
``tests``        the fast test set with ``WDIST_TEST_DEVICE`` set to the device
``tightness``    issue 14's sampler pairs that two CPU cores leave short of 5 % at batch 2,048
                 (Korotin's D=128, 64 and 256 funnels), at 8,192, samplers drawing on the device
``checkpoint``   a run stopped after its checkpoint on the device, resumed on the CPU
``levers``       each CUDA lever of ``wdist.cuda_options`` on / off (pinned memory,
                 cuDNN benchmark, bf16 autocast, torch.compile), BCOP critic, 2 x 10,000 PNGs
``ddp``          torchrun: 1 process (the CLI), 2 processes (nccl, else gloo on CUDA tensors)
``e2e32_bcop``   as e2e32 with ``--critic bcop``
``e2e64``        2 x 10,000 64x64 PNGs, defaults and ``--critic bcop``

Results: benchmarks/results/gpu.md and gpu.json (gpu-quick.* with
``--quick``), rewritten after every section so that a run cut short keeps
what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

import _child
from _photos import load_photos, random_crops

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_BUDGET_S = {"full": 470.0, "quick": 150.0}
#: Seconds kept back from every child's timeout to write the results.
RESERVE_S = 5.0


# ------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full run and ``--quick``."""

    n32: int = 50_000           # images per folder, 3 x px[0] x px[0] (section e2e32)
    n64: int = 10_000           # images per folder, 3 x px[1] x px[1] (section e2e64)
    px: tuple = (32, 64)        # image sizes of the two end-to-end sections
    small_px: int = 16          # image size of the in-memory runs (certificate, checkpoint)
    n_sub: int = 10_000         # per folder: levers and torchrun runs (hard links into the 32x32 folders)
    cli_steps: list = field(default_factory=list)   # extra CLI arguments (quick: a fixed small step budget)
    cert_n: int = 3000          # per side, 3 x small_px x small_px crops held in memory
    cert_steps: int = 200
    small_batch: int = 128      # per side, certificate and checkpoint runs (the CPU side must stay cheap)
    layer_shapes: tuple = ((64, 32), (256, 8), (512, 4))   # (channels, size): benchmarks/layers.py's SHAPES
    layer_batches: tuple = (64, 256)
    layer_repeats: int = 20
    critic_batch: int = 256
    critic_shape: tuple = (3, 32, 32)
    lever_steps: int = 300
    ddp_steps: int = 200
    ddp_n: int = 4000           # per side, 3x32x32 crops in memory
    ckpt_n: int = 1000
    ckpt_steps: int = 200
    test_args: tuple = ("-m", "not slow", "tests")
    #: known_truth.py cases of the tightness section, in order (the MLP, as the CPU rows; one
    #: start, as the CPU rows at batch 2,048 they are set beside: the lever here is the batch).
    tight_cases: tuple = ("k128-64:sampler:0:critic=mlp,batch_size=8192,restarts=1",
                          "k128-256:sampler:0:critic=mlp,batch_size=8192,restarts=1",
                          "k128-64:sampler:0:critic=mlp,restarts=1")


FULL = Sizes()
QUICK = Sizes(n32=200, n64=60, px=(8, 16), small_px=8, n_sub=100, cli_steps=["--steps", "6", "--eval-every", "3"],
              cert_n=100, cert_steps=12, small_batch=16, layer_shapes=((8, 8), (16, 4)), layer_batches=(4, 8), layer_repeats=1,
              critic_batch=4, critic_shape=(3, 8, 8), lever_steps=6, ddp_steps=6, ddp_n=64, ckpt_n=64, ckpt_steps=12,
              test_args=("-m", "not slow", "tests/test_nn.py", "tests/test_estimator.py", "-k",
                         "bcop_forward_is_an_isometry or training_forward_builds or checkpoint_loads"),
              tight_cases=("k16-4:sampler:0:critic=mlp,steps=20,eval_every=10,test_size=500",))


# --------------------------------------------------------------- plumbing
class Budget:
    """One global deadline for the whole run."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def cap(self, seconds: float) -> float:
        """A child's timeout: ``seconds``, or less when the deadline is nearer."""
        return max(1.0, min(seconds, self.left() - RESERVE_S))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_group(argv: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``argv`` in its own process group; on timeout the whole group is killed
    (torchrun's workers too).  Returns the last RESULT payload of its output plus
    wall_s, returncode, timed_out, peak RSS of the direct child and the last lines."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout and not timed_out:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this call started, by its id
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    payload: dict = {}
    for line in text.splitlines():
        if line.startswith(_child.RESULT_TAG):
            payload = json.loads(line[len(_child.RESULT_TAG):])
    tail = [line for line in text.strip().splitlines() if not line.startswith(_child.RESULT_TAG)][-6:]
    payload.update(wall_s=wall, returncode=proc.returncode, timed_out=timed_out,
                   peak_rss_bytes=usage.ru_maxrss * 1024, tail=tail)
    return payload


def md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def gb(nbytes) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**30:.2f} GiB"


@dataclass
class Section:
    """What one part of the check found: lines of text, an optional table, raw data."""

    lines: list = field(default_factory=list)
    header: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    data: dict = field(default_factory=dict)


class Report:
    """Runs the sections against the budget and rewrites gpu.md / gpu.json after each."""

    def __init__(self, args, sizes: Sizes, budget: Budget) -> None:
        self.args, self.sizes, self.budget = args, sizes, budget
        stem = "gpu-quick" if args.quick else "gpu"
        self.md_path, self.json_path = args.out / f"{stem}.md", args.out / f"{stem}.json"
        self.meta: dict = {}
        self.results: dict = {}
        # --only reruns some sections: the others are kept from the last results file.
        self.kept: dict = {}
        if args.only and self.json_path.exists():
            previous = json.loads(self.json_path.read_text())
            self.kept = {name: {**e, "title": e["title"] + f" (kept from the run of {previous['meta'].get('date')})"}
                         for name, e in previous["sections"].items() if name not in args.only}

    def run(self, name: str, title: str, fn, need_s: float) -> None:
        if self.args.only and name not in self.args.only:
            return
        entry = {"title": title, "status": "skipped", "seconds": 0.0, "error": None}
        left = self.budget.left()
        if left < need_s:
            entry["error"] = f"skipped: {left:.0f} s of the budget left, this part needs about {need_s:.0f} s"
            section = Section()
        else:
            print(f"[gpu.py {self.budget.elapsed():5.0f} s] {name}: {title}", flush=True)
            start = time.perf_counter()
            try:
                section = fn()
                entry["status"] = "ok"
            except Exception as exc:  # one part's failure must not lose the others
                section = Section()
                entry["status"] = "failed"
                entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["traceback"] = traceback.format_exc().splitlines()[-8:]
                print("\n".join(entry["traceback"]), file=sys.stderr, flush=True)
            entry["seconds"] = time.perf_counter() - start
        entry.update(lines=section.lines, header=section.header, rows=section.rows, data=section.data)
        self.results[name] = entry
        self.write()

    def write(self) -> None:
        self.meta["elapsed_s"] = self.budget.elapsed()
        self.args.out.mkdir(parents=True, exist_ok=True)
        merged = {**self.kept, **self.results}
        self.sections = {name: merged[name] for name in SECTIONS if name in merged}
        payload = {"meta": self.meta, "sections": self.sections}
        self.json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        self.md_path.write_text("\n".join(self.markdown()) + "\n")

    def markdown(self) -> list[str]:
        m = self.meta
        out = [f"# GPU check (issue 15){' -- quick, tiny sizes' if self.args.quick else ''}", "",
               f"Card: **{m.get('card', '?')}**; torch {m.get('torch')}, CUDA {m.get('cuda')}, "
               f"cuDNN {m.get('cudnn')}, NCCL {m.get('nccl')}, driver {m.get('driver')}; "
               f"Python {m.get('python')}, {m.get('cpus')} CPUs. Command: `{m.get('command')}`; "
               f"{m.get('elapsed_s', 0):.0f} s of a {m.get('budget_s', 0):.0f} s budget; {m.get('date')}.", ""]
        for name, e in self.sections.items():
            out += [f"## {name}: {e['title']}", "",
                    f"Status: **{e['status']}** ({e['seconds']:.1f} s)" + (f". {e['error']}" if e["error"] else ""), ""]
            if e["lines"]:
                out += [f"- {line}" for line in e["lines"]] + [""]
            if e["rows"]:
                out += md_table(e["header"], e["rows"]) + [""]
        return out


# ------------------------------------------------------------------- env
def env_section(device: torch.device, report: Report) -> Section:
    import wdist
    from wdist.cuda_options import CudaOptions

    m = report.meta
    m.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
             cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             cpus=os.cpu_count(), device=str(device), card=platform.processor() or platform.machine(),
             nccl=None, driver=None)
    lines = []
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        m.update(card=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                 capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
        with contextlib.suppress(Exception):
            version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old ones
            m["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        with contextlib.suppress(Exception):
            m["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip()
        lines.append(f"{props.name}: {m['memory_gib']} GiB, compute capability {m['capability']}, "
                     f"{props.multi_processor_count} multiprocessors")
        lines.append(f"TF32: cuDNN convolutions {torch.backends.cudnn.allow_tf32}, "
                     f"matmul {torch.backends.cuda.matmul.allow_tf32} (torch defaults; wdist sets neither)")
    with contextlib.suppress(Exception):
        m["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=REPO, timeout=10).stdout.strip() or None
    import ot  # noqa: F401  (POT: the carried wheel must import)

    m["pot"] = ot.__version__
    m["wdist"] = wdist.__version__
    opts = CudaOptions.for_device(device)
    lines.append(f"CUDA levers for this run (wdist.cuda_options, from the environment): {opts}")
    lines.append(f"POT {ot.__version__}, numpy {np.__version__}, wdist {wdist.__version__} from {wdist.__file__}")
    return Section(lines=lines, data={"levers": vars(opts)})


# --------------------------------------------------------------- folders
def _write_chunk(job: tuple) -> int:
    """Worker: ``count`` crops of one photo as PNGs ``start .. start+count-1``."""
    from PIL import Image

    folder, photo_index, start, count, size, seed = job
    photo = load_photos()[photo_index]
    crops = random_crops(photo, count, np.random.default_rng(seed), size=size)
    for i, crop in enumerate(crops):
        Image.fromarray(np.ascontiguousarray(crop)).save(Path(folder) / f"img_{start + i:05d}.png")
    return count


def write_folder(folder: Path, photo_index: int, n: int, size: int, seed: int, workers: int) -> None:
    """``n`` random ``size`` x ``size`` crops of one of scikit-learn's photos (0: china, 1: flower)."""
    if folder.is_dir() and len(list(folder.glob("*.png"))) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    chunk = max(1, -(-n // (4 * workers)))
    jobs = [(str(folder), photo_index, s, min(chunk, n - s), size, seed * 100_003 + s) for s in range(0, n, chunk)]
    with Pool(workers) as pool:
        assert sum(pool.map(_write_chunk, jobs)) == n


def folders_section(work: Path, sizes: Sizes) -> Section:
    from folders import subset

    workers = max(1, min(16, os.cpu_count() or 1))
    start = time.perf_counter()
    (small, large) = sizes.px
    for tag, size, n in (("32", small, sizes.n32), ("64", large, sizes.n64)):
        for side, photo in (("A", 0), ("B", 1)):
            write_folder(work / f"{side}{tag}", photo, n, size, seed=size + photo, workers=workers)
    for side in "AB":
        subset(work / f"{side}32", sizes.n_sub, work / f"{side}32-sub")
    return Section(lines=[f"2 x {sizes.n32} PNGs 3x{small}x{small} (china.jpg vs flower.jpg crops), 2 x {sizes.n64} "
                          f"3x{large}x{large}, 2 x {sizes.n_sub} hard links to the first; "
                          f"{time.perf_counter() - start:.1f} s with {workers} processes"])


# ------------------------------------------------------------ certificate
def crops(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n crops of each photo, float32 (n, 3, size, size) in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = []
    for photo in load_photos():
        c = random_crops(photo, n, rng, size=size).transpose(0, 3, 1, 2)
        out.append(torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32) / np.float32(255)))
    return out[0], out[1]


def layer_spectra(critic: torch.nn.Module, shape: tuple[int, ...]) -> list[list]:
    """Per constrained layer: (name, input grid, min and max singular value), float64 on the CPU."""
    from wdist.lipschitz import conv2d_operator_norm
    from wdist.nn import BCOPConv2d, BjorckLinear

    grids: dict = {}

    def record(name):
        def hook(module, inputs, output) -> None:  # returns None: the output is left alone
            grids[name] = tuple(inputs[0].shape[2:])
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in critic.named_modules() if isinstance(m, BCOPConv2d)]
    critic.eval()
    with torch.no_grad():
        critic(torch.zeros((1, *shape), device=next(critic.parameters()).device))
    for h in hooks:
        h.remove()
    rows = []
    for name, m in critic.named_modules():
        if isinstance(m, BCOPConv2d):
            w = m.weight.detach().double().cpu()
            symbol = torch.fft.fft2(w, s=grids[name]).permute(2, 3, 0, 1)
            sv = torch.linalg.svdvals(symbol)
            assert abs(float(sv.max()) - conv2d_operator_norm(w, grids[name])) < 1e-9
            rows.append([f"{name} BCOPConv2d {m.in_channels}->{m.out_channels}", "x".join(map(str, grids[name])),
                         f"{float(sv.min()):.6f}", f"{float(sv.max()):.6f}"])
        elif isinstance(m, BjorckLinear):
            sv = torch.linalg.svdvals(m.weight.detach().double().cpu())
            rows.append([f"{name} BjorckLinear {m.in_features}->{m.out_features}", "-",
                         f"{float(sv.min()):.6f}", f"{float(sv.max()):.6f}"])
    return rows


def same_weights_gap(critic: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """The device-trained critic evaluated on the device (TF32 as set, then off) and on the CPU."""
    import copy

    def gap(model, dev):
        with torch.no_grad():
            fx = torch.cat([model(b.to(dev)).reshape(-1).double().cpu() for b in x.split(512)])
            fy = torch.cat([model(b.to(dev)).reshape(-1).double().cpu() for b in y.split(512)])
        return fx, fy

    cpu_model = copy.deepcopy(critic).cpu().eval()
    fx_cpu, fy_cpu = gap(cpu_model, torch.device("cpu"))
    out = {"gap_cpu": float(fx_cpu.mean() - fy_cpu.mean())}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    for label, flags in (("default", tf32), ("tf32_off", (False, False))):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
        try:
            fx, fy = gap(critic.eval(), device)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        out[f"gap_{label}"] = float(fx.mean() - fy.mean())
        out[f"max_abs_f_diff_{label}"] = float(torch.cat([fx - fx_cpu, fy - fy_cpu]).abs().max())
    out["f_scale"] = float(torch.cat([fx_cpu, fy_cpu]).abs().max())
    return out


def certificate_section(device: torch.device, sizes: Sizes) -> Section:
    import wdist

    x, y = crops(sizes.cert_n, sizes.small_px)
    shape = tuple(x.shape[1:])
    kwargs = dict(steps=sizes.cert_steps, eval_every=max(1, sizes.cert_steps // 4), batch_size=sizes.small_batch,
                  seed=0, progress=False)
    lines, data = [], {}
    results = {}
    for critic in ("bcop", "linear"):
        for dev in (device, torch.device("cpu")):
            start = time.perf_counter()
            res = wdist.estimate_w1(x, y, critic=critic, device=dev, **kwargs)
            results[critic, dev.type] = res
            data[f"{critic}_{dev.type}"] = {k: getattr(res, k) for k in ("value", "lower", "upper", "std_error",
                                                                       "lipschitz", "seconds")}
            data[f"{critic}_{dev.type}"]["wall_s"] = time.perf_counter() - start
    rows = []
    for critic in ("bcop", "linear"):
        d, c = results[critic, device.type], results[critic, "cpu"]
        inside = d.lower <= c.value <= d.upper and c.lower <= d.value <= c.upper
        rows.append([critic, f"{d.value:.5f} [{d.lower:.5f}, {d.upper:.5f}]", f"{c.value:.5f} [{c.lower:.5f}, {c.upper:.5f}]",
                     f"{abs(d.value - c.value) / d.std_error:.3f}", "yes" if inside else "**NO**",
                     f"{d.lipschitz:.7f}", f"{c.lipschitz:.7f}"])
        data[f"{critic}_inside"] = inside
    trained = results["bcop", device.type].critic
    spectra = layer_spectra(trained, shape)
    sv_min = min(float(r[2]) for r in spectra)
    sv_max = max(float(r[3]) for r in spectra)
    same = same_weights_gap(trained, x, y, device)
    data.update(spectra=spectra, same_weights=same, sv_min=sv_min, sv_max=sv_max)
    lines.append(f"3x{sizes.small_px}x{sizes.small_px} crops, {sizes.cert_n} per side, {sizes.cert_steps} steps, seed 0, on {device} and on cpu")
    lines.append(f"BCOP critic trained on {device}: every singular value of every constrained layer in "
                 f"[{sv_min:.6f}, {sv_max:.6f}] (exact: Fourier symbol over the layer's grid / SVD, float64); "
                 f"lipschitz_bound {results['bcop', device.type].lipschitz:.7f}")
    lines += [f"  {r[0]} on {r[1]}: singular values [{r[2]}, {r[3]}]" for r in spectra]
    lines.append(f"Same {device}-trained weights on all {2 * sizes.cert_n} images: gap {same['gap_default']:.6f} on "
                 f"{device} (TF32 as torch sets it) vs {same['gap_cpu']:.6f} on cpu, max |f_dev - f_cpu| "
                 f"{same['max_abs_f_diff_default']:.2e} ({same['max_abs_f_diff_tf32_off']:.2e} with TF32 off; "
                 f"|f| up to {same['f_scale']:.3g})")
    header = ["critic", f"{device.type} value [95% CI]", "cpu value [95% CI]", "abs(difference) / se",
              "each inside the other's interval", f"Lipschitz ({device.type})", "Lipschitz (cpu)"]
    return Section(lines=lines, header=header, rows=rows, data=data)


# ----------------------------------------------------------------- layers
def _step(layer, x, opt, retract: bool, bf16: bool):
    from wdist.nn import retract_

    def step():
        opt.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = layer(x)
        out.float().square().mean().backward()
        opt.step()
        if retract:
            retract_(layer)

    return step


def best_time(fn, device: torch.device, repeats: int, rounds: int = 3) -> float:
    """Best over ``rounds`` of the mean time of ``repeats`` calls (synchronised), after two warm-ups."""
    fn()
    fn()
    sync(device)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def layer_row(channels: int, size: int, batch: int, bf16: bool, device: torch.device, repeats: int) -> dict:
    from layers import _other_layers
    from wdist.nn import BCOPConv2d
    from wdist.nn.sameconv import SameConv2d
    from wdist.training import make_adam

    torch.manual_seed(0)
    x_deep = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    x = x_deep.detach()
    layers = {"conv": (SameConv2d(channels, channels, 3), False), "bcop": (BCOPConv2d(channels, channels, 3), True)}
    layers.update({name: (layer, False) for name, layer in _other_layers(channels).items()})
    row = {"channels": channels, "size": size, "batch": batch, "precision": "bf16" if bf16 else "fp32"}
    for name, (layer, retract) in layers.items():
        layer.to(device).train()
        opt = make_adam(layer.parameters(), 1e-3)
        row[f"{name}_train"] = best_time(_step(layer, x_deep, opt, retract, bf16), device, repeats)
        if name in ("conv", "bcop"):
            row[f"{name}_train_leaf"] = best_time(_step(layer, x, opt, retract, bf16), device, repeats)
        layer.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            row[f"{name}_eval"] = best_time(lambda layer=layer: layer(x), device, repeats)
    for name in layers:
        row[f"{name}_train_ratio"] = row[f"{name}_train"] / row["conv_train"]
        row[f"{name}_eval_ratio"] = row[f"{name}_eval"] / row["conv_eval"]
    row["leaf_ratio"] = row["bcop_train_leaf"] / row["conv_train_leaf"]
    return row


def critic_row(shape: tuple, batch: int, bf16: bool, device: torch.device, repeats: int) -> dict:
    """The default image critic's full training step against its unconstrained twin (layers.py)."""
    from layers import unconstrained_twin
    from wdist.critics import bcop_critic
    from wdist.nn import retract_
    from wdist.training import make_adam

    torch.manual_seed(0)
    x = torch.rand(2 * batch, *shape, device=device)
    certified = bcop_critic(shape)
    row = {"batch": batch, "precision": "bf16" if bf16 else "fp32"}
    for name, critic, retract in (("plain", unconstrained_twin(certified), False), ("bcop", certified, True)):
        critic.to(device).train()
        opt = make_adam(critic.parameters(), 1e-3)

        def step(critic=critic, opt=opt, retract=retract):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = critic(x).reshape(-1).float()
            gap = out[:batch].mean() - out[batch:].mean()
            opt.zero_grad(set_to_none=True)
            (-gap).backward()
            opt.step()
            if retract:
                retract_(critic)

        row[f"{name}_train"] = best_time(step, device, max(2, repeats // 2))
    row["ratio"] = row["bcop_train"] / row["plain_train"]
    return row


def layers_section(device: torch.device, sizes: Sizes) -> Section:
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as wdist's trainer sets it on CUDA
    try:
        rows = [layer_row(c, s, b, bf16, device, sizes.layer_repeats)
                for c, s in sizes.layer_shapes for b in sizes.layer_batches for bf16 in (False, True)]
        critics = [critic_row(sizes.critic_shape, sizes.critic_batch, bf16, device, sizes.layer_repeats)
                   for bf16 in (False, True)]
    finally:
        torch.backends.cudnn.benchmark = previous
    others = [n for n in ("aoc", "torchlip") if f"{n}_train" in rows[0]]
    header = ["channels", "size", "batch", "precision", "Conv2d train ms", "BCOP train ms", "train ratio",
              "first-layer train ratio", "Conv2d eval ms", "BCOP eval ms", "eval ratio"]
    header += [f"{n} train / eval ratio" for n in others]
    table = [[r["channels"], f"{r['size']}x{r['size']}", r["batch"], r["precision"], f"{1e3 * r['conv_train']:.3f}",
              f"{1e3 * r['bcop_train']:.3f}", f"{r['bcop_train_ratio']:.2f}x", f"{r['leaf_ratio']:.2f}x",
              f"{1e3 * r['conv_eval']:.3f}", f"{1e3 * r['bcop_eval']:.3f}", f"{r['bcop_eval_ratio']:.2f}x"]
             + [f"{r[f'{n}_train_ratio']:.2f}x / {r[f'{n}_eval_ratio']:.2f}x" for n in others] for r in rows]
    lines = [f"Train step = forward (under bf16 autocast for bf16; kernels built in fp32) + backward to the input "
             f"+ fused Adam (+ retraction for BCOP); first-layer = no input gradient. Best of 3 rounds of "
             f"{sizes.layer_repeats} synchronised steps after 2 warm-ups; cuDNN benchmark mode on for CUDA.",
             "orthogonium / deel-torchlip: " + (", ".join(others) if others else "not installed, skipped")]
    lines += [f"default critic (bcop_critic, {'x'.join(map(str, sizes.critic_shape))}), batch {c['batch']} + {c['batch']}, {c['precision']}: "
              f"{1e3 * c['bcop_train']:.2f} ms vs {1e3 * c['plain_train']:.2f} ms unconstrained, {c['ratio']:.2f}x"
              for c in critics]
    targets = [r for r in rows if r["channels"] == 512 and r["batch"] == 256 and r["precision"] == "fp32"]
    for r in targets:
        lines.append(f"target (issue 15): 512 channels, batch 256: train {r['bcop_train_ratio']:.2f}x (goal <= 1.2x), "
                     f"eval {r['bcop_eval_ratio']:.2f}x (goal <= 1.05x)")
    return Section(lines=lines, header=header, rows=table, data={"layers": rows, "critic": critics})


# -------------------------------------------------------------------- e2e
def cli_run(a: Path, b: Path, extra: list[str], device: torch.device, sizes: Sizes, timeout: float,
            json_path: Path) -> dict:
    """``wdist estimate A B`` in a fresh process that reports its peak GPU memory."""
    json_path.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-cli", "estimate", str(a), str(b),
            "--device", device.type, "--seed", "0", "--quiet", "--json", str(json_path), *extra, *sizes.cli_steps]
    res = run_group(argv, timeout)
    if json_path.exists():
        payload = json.loads(json_path.read_text())
        res.update({k: payload[k] for k in ("value", "lower", "upper", "lipschitz", "steps", "seconds")},
                   critic=payload["settings"]["critic"], candidates=payload["settings"].get("candidates"),
                   n=payload["command"]["n_a"] + payload["command"]["n_b"])
    return res


def e2e_section(work: Path, size: int, variants: list[tuple[str, list[str]]], device: torch.device,
                sizes: Sizes, budget: Budget, cap_s: float) -> Section:
    rows, data, lines = [], {}, []
    n, px = (sizes.n32, sizes.px[0]) if size == 32 else (sizes.n64, sizes.px[1])
    for label, extra in variants:
        if budget.left() < 30:
            lines.append(f"{label}: skipped, {budget.left():.0f} s of the budget left")
            continue
        res = cli_run(work / f"A{size}", work / f"B{size}", extra, device, sizes, budget.cap(cap_s),
                      work / f"e2e{size}-{label.replace(' ', '_')}.json")
        data[label] = res
        if res["timed_out"] or "value" not in res:
            why = f"timed out after {res['wall_s']:.0f} s" if res["timed_out"] else f"exit {res['returncode']}"
            lines.append(f"{label}: no result ({why}): " + " / ".join(res["tail"][-3:]))
            rows.append([label, f"> {res['wall_s']:.0f}" if res["timed_out"] else "failed"] + ["n/a"] * 6)
            continue
        rows.append([label, f"{res['wall_s']:.1f}", f"{res['seconds']:.1f}", f"{res['n'] / res['wall_s']:.0f}",
                     gb(res.get("peak_gpu_allocated")), f"{res['peak_rss_bytes'] / 1e9:.2f} GB",
                     f"{res['critic']}, {res['steps']} steps",
                     f"{res['value']:.4f} [{res['lower']:.4f}, {res['upper']:.4f}], L {res['lipschitz']:.6f}"])
    lines.insert(0, f"`python -m wdist estimate A B --device {device.type} --seed 0 --quiet --json ...` on 2 x {n} "
                    f"3x{px}x{px} PNGs, each in a fresh process (start-up, indexing that decodes every image, "
                    f"training, test pass); images/s = 2n / wall time; peak GPU memory = "
                    f"torch.cuda.max_memory_allocated in that process")
    header = ["settings", "wall s", "inside estimate_w1 s", "images/s", "peak GPU memory (allocated)",
              "peak RSS", "chosen critic", "W1 [95% CI], certified L"]
    return Section(lines=lines, header=header, rows=rows, data=data)


# ------------------------------------------------------------------ tests
def tests_section(device: torch.device, sizes: Sizes, budget: Budget, cap_s: float, work: Path) -> Section:
    junit = work / "junit.xml"
    junit.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *sizes.test_args]
    res = run_group(argv, budget.cap(cap_s), env={"WDIST_TEST_DEVICE": str(device)})
    lines = [f"`WDIST_TEST_DEVICE={device} python -m pytest -q {' '.join(sizes.test_args)}`: exit {res['returncode']}"
             f"{' (timed out)' if res['timed_out'] else ''}, {res['wall_s']:.0f} s; " + " / ".join(res["tail"][-1:])]
    rows, data = [], {"returncode": res["returncode"], "timed_out": res["timed_out"]}
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        data.update(counts)
        lines.append(f"{counts['tests']} tests: {counts['failures']} failed, {counts['errors']} errors, "
                     f"{counts['skipped']} skipped")
        for case in suite.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                message = (bad.get("message") or "").splitlines()[:1]
                rows.append([f"{case.get('classname')}::{case.get('name')}", (message[0] if message else "")[:200]])
    if res["returncode"] != 0 and not rows:
        lines += res["tail"]
    return Section(lines=lines, header=["failing test", "message"] if rows else [], rows=rows, data=data)


# ------------------------------------------------------------- checkpoint
@contextlib.contextmanager
def stop_after_checkpoint(step: int):
    """Make the run stop (as Ctrl-C would) right after the checkpoint of ``step`` is written."""
    from wdist.checkpoint import Checkpointer

    original = Checkpointer.maybe_save

    def save_then_stop(self, trainer):
        original(self, trainer)
        if trainer.state.step >= step:
            raise KeyboardInterrupt

    Checkpointer.maybe_save = save_then_stop
    try:
        yield
    finally:
        Checkpointer.maybe_save = original


def checkpoint_section(device: torch.device, sizes: Sizes, work: Path) -> Section:
    import shutil

    import wdist

    x, y = crops(sizes.ckpt_n, sizes.small_px, seed=1)
    half = sizes.ckpt_steps // 2
    kwargs = dict(critic="bcop", steps=sizes.ckpt_steps, eval_every=max(1, half // 2), batch_size=sizes.small_batch,
                  seed=0, progress=False)
    folder = work / "checkpoint"
    shutil.rmtree(folder, ignore_errors=True)
    reference = wdist.estimate_w1(x, y, device=device, **kwargs)
    with stop_after_checkpoint(half), contextlib.suppress(KeyboardInterrupt):
        wdist.estimate_w1(x, y, device=device, checkpoint=folder, **kwargs)
    saved = torch.load(folder / "bcop" / "checkpoint.pt", weights_only=True)
    written_on = {t.device.type for t in saved["trainer"]["critic"].values()}
    resumed = wdist.estimate_w1(x, y, device="cpu", checkpoint=folder, resume=True, **kwargs)
    first = [h for h in reference.history if h["step"] <= half]
    same_history = resumed.history[: len(first)] == first
    inside = reference.lower <= resumed.value <= reference.upper
    lines = [f"BCOP critic, 3x{sizes.small_px}x{sizes.small_px} crops, {sizes.ckpt_n} per side, {sizes.ckpt_steps} steps: stopped after the "
             f"step-{saved['trainer']['progress']['step']} checkpoint on {device} (critic tensors saved on "
             f"{sorted(written_on)}), resumed with device='cpu' (torch.load map_location=cpu)",
             f"uninterrupted on {device}: {reference.value:.5f} [{reference.lower:.5f}, {reference.upper:.5f}]; "
             f"resumed on cpu: {resumed.value:.5f} [{resumed.lower:.5f}, {resumed.upper:.5f}] after "
             f"{resumed.steps} steps; inside the uninterrupted interval: {'yes' if inside else '**NO**'}",
             f"history up to the checkpoint equal to the uninterrupted run's: {same_history}"]
    return Section(lines=lines, data={"reference": reference.to_dict(), "resumed": resumed.to_dict(),
                                      "written_on": sorted(written_on), "inside": inside,
                                      "same_history": same_history})


# ----------------------------------------------------------------- levers
LEVERS = [  # (label, environment): wdist.cuda_options
    ("defaults (pinned memory, cuDNN benchmark)", {}),
    ("pinned memory off", {"WDIST_PIN_MEMORY": "0"}),
    ("cuDNN benchmark off", {"WDIST_CUDNN_BENCHMARK": "0"}),
    ("bf16 autocast", {"WDIST_AUTOCAST": "bf16"}),
    ("defaults again (noise)", {}),
    ("torch.compile", {"WDIST_COMPILE": "1"}),
]


def child_levers(argv: list[str]) -> None:
    """Child: the BCOP critic on two folders once per lever setting, results appended to a JSON file."""
    import wdist
    from wdist.images import ImageFolder, find_images

    device, dir_a, dir_b, steps, out = torch.device(argv[0]), argv[1], argv[2], int(argv[3]), Path(argv[4])
    px = int(argv[5])
    a, b = (ImageFolder(find_images(d), (px, px)) for d in (dir_a, dir_b))
    kwargs = dict(critic="bcop", eval_every=100, seed=0, progress=False, device=device)
    wdist.estimate_w1(a, b, steps=5, **kwargs)  # warm-up: decodes every image into the cache, CUDA context
    results = []
    for label, env in LEVERS:
        os.environ.update(env)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        try:
            res = wdist.estimate_w1(a, b, steps=steps, **kwargs)
            sync(device)
            row = {"label": label, "env": env, "seconds": time.perf_counter() - start, "value": res.value,
                   "lower": res.lower, "upper": res.upper, "lipschitz": res.lipschitz}
        except Exception as exc:
            row = {"label": label, "env": env, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        finally:
            for key in env:
                os.environ.pop(key, None)
        if device.type == "cuda":
            row["peak_gpu_allocated"] = torch.cuda.max_memory_allocated(device)
        results.append(row)
        out.write_text(json.dumps(results))


def levers_section(work: Path, device: torch.device, sizes: Sizes, budget: Budget, cap_s: float) -> Section:
    out = work / "levers.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-levers", str(device), str(work / "A32-sub"),
            str(work / "B32-sub"), str(sizes.lever_steps), str(out), str(sizes.px[0])]
    res = run_group(argv, budget.cap(cap_s))
    rows = json.loads(out.read_text()) if out.exists() else []
    lines = [f"estimate_w1(critic='bcop', steps={sizes.lever_steps}) on 2 x {sizes.n_sub} {sizes.px[0]}x{sizes.px[0]} PNGs "
             f"(ImageFolder, decoded pixels cached by a warm-up run), one process, each lever set through "
             f"its environment variable; time = the whole call (training + evaluations)"]
    if res["timed_out"] or res["returncode"] != 0:
        why = "timed out" if res["timed_out"] else f"exit {res['returncode']}"
        lines.append(f"child {why} after {res['wall_s']:.0f} s: " + " / ".join(res["tail"][-3:]))
    base = next((r["seconds"] for r in rows if "seconds" in r), None)
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["label"], "failed", "", "", r["error"][:150]])
            continue
        table.append([r["label"], f"{r['seconds']:.2f}", f"{r['seconds'] / base:.2f}x" if base else "n/a",
                      gb(r.get("peak_gpu_allocated")), f"{r['value']:.4f} [{r['lower']:.4f}, {r['upper']:.4f}]"])
    done = {r["label"] for r in rows}
    lines += [f"{label}: not reached" for label, _ in LEVERS if label not in done]
    return Section(lines=lines, header=["setting", "s", "vs defaults", "peak GPU memory", "W1 [95% CI]"],
                   rows=table, data={"rows": rows})


# -------------------------------------------------------------- tightness
def child_tightness(argv: list[str]) -> None:
    """Child: known_truth.py's cases on the device, one row appended to a JSON file after each."""
    sys.path.insert(0, str(HERE))
    from known_truth import Case, parse_case, run_case

    device, out, cases = torch.device(argv[0]), Path(argv[1]), argv[2:]
    rows: list = []
    for text in cases:
        case = parse_case(text)
        # the committed CPU row of the same case at the default batch, to set beside it
        cpu_key = Case(case.pair, case.regime, case.n, {k: v for k, v in case.options.items() if k != "batch_size"}).key
        rows.append({"case": text, "cpu_key": cpu_key})
        out.write_text(json.dumps(rows))  # a case cut short by the timeout is named as such
        try:
            rows[-1] = {**rows[-1], **run_case(case, device=device)}
        except Exception as exc:
            rows[-1]["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        out.write_text(json.dumps(rows))


def tightness_section(work: Path, device: torch.device, sizes: Sizes, budget: Budget, cap_s: float) -> Section:
    out = work / "tightness.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-tightness", str(device), str(out),
            *sizes.tight_cases]
    res = run_group(argv, budget.cap(cap_s))
    rows = json.loads(out.read_text()) if out.exists() else []
    cpu_path = HERE / "results" / "known_truth.json"
    cpu_rows = json.loads(cpu_path.read_text())["rows"] if cpu_path.exists() else {}
    lines = ["benchmarks/known_truth.py's cases with FunnelPair.samplers(device=...) (the transport in "
             "torch on the device) and estimate_w1(device=...), seed 0, default schedule unless the case "
             "names options; the CPU column is the committed row of results/known_truth.md (2 cores)",
             "one seed: on 64 funnels the critic's start alone moves a value by up to 0.12 of the truth "
             "(benchmarks/README.md, 'Seeds'), so a smaller difference between two cases may be luck"]
    if res["timed_out"] or res["returncode"] != 0:
        why = "timed out" if res["timed_out"] else f"exit {res['returncode']}"
        lines.append(f"child {why} after {res['wall_s']:.0f} s: " + " / ".join(res["tail"][-3:]))
    table = []
    for r in rows:
        if "ratio" not in r:
            table.append([r["case"], r.get("error", "cut short by the section's timeout")[:150], "", "", "", ""])
            continue
        cpu = cpu_rows.get(r["cpu_key"])
        cpu_cell = f"{cpu['ratio']:.3f} ({cpu.get('population_ratio', float('nan')):.3f}), {cpu['seconds']:.0f} s" \
            if cpu else ""
        table.append([r["case"], f"{r['ratio']:.3f} [{r['lower'] / r['truth']:.3f}, {r['upper'] / r['truth']:.3f}]",
                      fmt(r.get("population_ratio"), 3), f"{r['steps']:,}", f"{r['seconds']:.0f}", cpu_cell])
    done = {r["case"] for r in rows}
    lines += [f"{key}: not reached" for key in sizes.tight_cases if key not in done]
    return Section(lines=lines, header=["case", "value / truth [95% CI]", "population gap / truth", "steps", "s",
                                        "CPU row: value (population), time"], rows=table, data={"rows": rows})


# -------------------------------------------------------------------- ddp
def ddp_worker(argv: list[str]) -> None:
    """One torchrun rank: its own process group (``backend``) on ``device``, then estimate_w1."""
    from datetime import timedelta

    import torch.distributed as dist

    import wdist

    backend, device, n, steps, out = argv[0], torch.device(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    px = int(argv[5])
    if device.type == "cuda":
        device = torch.device("cuda", 0)  # every rank on the one GPU (set_device needs an index)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=60))
    try:
        # One collective on a device tensor first: shows whether the backend works at all,
        # apart from what wdist does with it (a world of 1 runs without DDP).
        ones = torch.ones(1, device=device)
        dist.all_reduce(ones)
        assert float(ones) == dist.get_world_size()
        x, y = crops(n, px)
        res = wdist.estimate_w1(x, y, critic="bcop", steps=steps, eval_every=100, seed=0, device=device,
                                progress=False)
        if dist.get_rank() == 0:
            out.write_text(json.dumps({**{k: getattr(res, k) for k in ("value", "lower", "upper", "std_error",
                                                                         "seconds")},
                                       "world_size": res.settings["world_size"], "backend": backend}))
    finally:
        dist.destroy_process_group()


def torchrun(nproc: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def ddp_section(work: Path, device: torch.device, sizes: Sizes, budget: Budget, cap_s: float) -> Section:
    import wdist

    lines, rows, data = [], [], {}
    env = {"WDIST_DIST_TIMEOUT": "60"}  # a hung collective ends the run instead of eating the budget
    one = work / "ddp1.json"
    one.unlink(missing_ok=True)
    r1 = run_group(torchrun(1, ["-m", "wdist", "estimate", str(work / "A32-sub"), str(work / "B32-sub"),
                                "--device", device.type, "--critic", "bcop", "--steps", str(sizes.ddp_steps),
                                "--seed", "0", "--quiet", "--json", str(one)]), budget.cap(cap_s / 3), env)
    data["torchrun_1"] = r1
    if one.exists():
        p = json.loads(one.read_text())
        rows.append(["torchrun, 1 process, `wdist estimate` (a world of 1 is a plain process: no DDP)", "-",
                     f"{r1['wall_s']:.1f}", f"{p['value']:.4f} [{p['lower']:.4f}, {p['upper']:.4f}]", "-"])
    else:
        rows.append(["torchrun, 1 process", "-", f"{r1['wall_s']:.1f}", "failed: " + " / ".join(r1["tail"][-2:]), "-"])
    x, y = crops(sizes.ddp_n, sizes.px[0])
    ref = wdist.estimate_w1(x, y, critic="bcop", steps=sizes.ddp_steps, eval_every=100, seed=0, device=device,
                            progress=False)
    rows.append(["1 process, in memory (reference)", "-", f"{ref.seconds:.1f}",
                 f"{ref.value:.4f} [{ref.lower:.4f}, {ref.upper:.4f}]", "-"])
    first = "nccl" if device.type == "cuda" else "gloo"
    attempts = [(1, first)] + [(2, backend) for backend in (["nccl", "gloo"] if device.type == "cuda" else ["gloo"])]
    for nproc, backend in attempts:
        if budget.left() < 20:
            lines.append(f"{nproc} process(es) with {backend}: skipped, budget")
            break
        if nproc == 2 and any(r[0].startswith("torchrun, 2 processes") for r in rows):
            break  # nccl worked: gloo is only the fallback
        out = work / f"ddp{nproc}-{backend}.json"
        out.unlink(missing_ok=True)
        r2 = run_group(torchrun(nproc, [str(Path(__file__).resolve()), "--ddp-worker", backend, str(device),
                                        str(sizes.ddp_n), str(sizes.ddp_steps), str(out), str(sizes.px[0])]),
                       budget.cap(cap_s / 4), env)
        data[f"torchrun_{nproc}_{backend}"] = r2
        what = "DDP" if nproc > 1 else "a one-rank group, one all_reduce (no DDP in a world of 1)"
        if out.exists():
            p = json.loads(out.read_text())
            rows.append([f"torchrun, {nproc} process{'es' if nproc > 1 else ''} on one {device.type}, {what}",
                         backend, f"{r2['wall_s']:.1f}", f"{p['value']:.4f} [{p['lower']:.4f}, {p['upper']:.4f}]",
                         f"{abs(p['value'] - ref.value) / ref.std_error:.2f}"])
            continue
        lines.append(f"{nproc} process(es) with {backend} failed (exit {r2['returncode']}"
                     f"{', timed out' if r2['timed_out'] else ''}): " + " / ".join(r2["tail"][-3:]))
    lines.insert(0, f"BCOP critic, {sizes.ddp_steps} steps, seed 0; the worker rows use 2 x {sizes.ddp_n} "
                    f"3x{sizes.px[0]}x{sizes.px[0]} crops in memory, the torchrun CLI row 2 x {sizes.n_sub} PNGs")
    header = ["run", "backend", "wall s", "W1 [95% CI]", "abs(difference) to reference / se"]
    return Section(lines=lines, header=header, rows=rows, data=data)


# ------------------------------------------------------------------ child
def child_cli(argv: list[str]) -> None:
    """Child: ``wdist`` command line in this process, then its peak GPU memory."""
    from wdist.cli import main as wdist_main

    code = 0
    try:
        wdist_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        payload = {"exit_code": code}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            payload.update(peak_gpu_allocated=torch.cuda.max_memory_allocated(),
                           peak_gpu_reserved=torch.cuda.max_memory_reserved())
        _child.emit(payload)
    sys.exit(code)


# ------------------------------------------------------------------- main
SECTIONS = ["env", "folders", "certificate", "layers", "e2e32", "tests", "tightness", "checkpoint", "levers", "ddp",
            "e2e32_bcop", "e2e64"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the slow test runs it on the CPU)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run (default 470; --quick 150)")
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default=None,
                        help=f"comma-separated sections ({','.join(SECTIONS)}); env always runs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for gpu.md and gpu.json")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the PNG folders here (reused)")
    args = parser.parse_args(argv)
    if args.only:
        unknown = args.only - set(SECTIONS)
        if unknown:
            parser.error(f"--only: unknown section(s) {sorted(unknown)}")
        args.only |= {"env"}
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("Error: --device cuda but CUDA is not available here (use --quick --device cpu)")
    sizes = QUICK if args.quick else FULL
    budget = Budget(args.budget or DEFAULT_BUDGET_S["quick" if args.quick else "full"])
    report = Report(args, sizes, budget)
    report.meta.update(command="python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
                       budget_s=budget.deadline - budget.start, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="wdist-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    # tightness: 200 s in the full run; alone (--only), the whole budget (its cases take as long as they take).
    caps = {"e2e32": 170.0, "tests": 120.0, "tightness": 200.0 if not args.only else math.inf, "levers": 110.0,
            "ddp": 100.0, "e2e32_bcop": 90.0, "e2e64": 90.0}
    if args.quick:
        # torchrun starts two torch processes on two CPU cores: 10 s here, over 15 s (a quarter
        # of 60) on the CI machine, where the 2-process row then timed out.
        caps = {k: 60.0 for k in caps} | {"ddp": 200.0}
    small, large = sizes.px
    plan = [
        ("env", "machine and versions", lambda: env_section(device, report), 0),
        ("folders", "PNG photo crops for the end-to-end runs", lambda: folders_section(work, sizes), 10),
        ("certificate", "certificate on device-trained weights; device vs CPU estimate",
         lambda: certificate_section(device, sizes), 30),
        ("layers", "BCOP vs Conv2d: train step and eval, fp32 and bf16",
         lambda: layers_section(device, sizes), 30),
        ("e2e32", f"wdist estimate, 2 x {sizes.n32:,} 3x{small}x{small} PNGs, default settings",
         lambda: e2e_section(work, 32, [("defaults", [])], device, sizes, budget, caps["e2e32"]), 40),
        ("tests", "the fast test set on the device", lambda: tests_section(device, sizes, budget, caps["tests"], work), 40),
        ("tightness", "issue 14's many-funnel sampler pairs, drawn and trained on the device",
         lambda: tightness_section(work, device, sizes, budget, caps["tightness"]), 60),
        ("checkpoint", "checkpoint written on the device, resumed on the CPU",
         lambda: checkpoint_section(device, sizes, work), 20),
        ("levers", "CUDA levers on / off (wdist.cuda_options)",
         lambda: levers_section(work, device, sizes, budget, caps["levers"]), 40),
        ("ddp", "torchrun / DDP on the one device", lambda: ddp_section(work, device, sizes, budget, caps["ddp"]), 40),
        ("e2e32_bcop", f"wdist estimate, 2 x {sizes.n32:,} 3x{small}x{small} PNGs, --critic bcop",
         lambda: e2e_section(work, 32, [("--critic bcop", ["--critic", "bcop"])], device, sizes, budget,
                             caps["e2e32_bcop"]), 30),
        ("e2e64", f"wdist estimate, 2 x {sizes.n64:,} 3x{large}x{large} PNGs, defaults and --critic bcop",
         lambda: e2e_section(work, 64, [("defaults", []), ("--critic bcop", ["--critic", "bcop"])], device, sizes,
                             budget, caps["e2e64"]), 30),
    ]
    try:
        for name, title, fn, need in plan:
            report.run(name, title, fn, need)
    finally:
        report.write()
        if args.workdir is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print(f"[gpu.py {budget.elapsed():5.0f} s] wrote {report.md_path} and {report.json_path}")
    for name, e in report.results.items():
        print(f"  {name:12s} {e['status']:8s} {e['seconds']:6.1f} s  {e['error'] or ''}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-cli":
        child_cli(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-levers":
        child_levers(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-tightness":
        child_tightness(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--ddp-worker":
        ddp_worker(sys.argv[2:])
    else:
        main()
