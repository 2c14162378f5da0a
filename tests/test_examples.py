"""Every script of ``examples/`` runs in ``--quick`` mode and prints true statements.

Each example is run as a user would run it (a subprocess, one math thread,
``PYTHONPATH`` at this checkout), and its printed numbers are parsed and
checked against what the example claims: the confidence interval covers the
closed-form W1, the bracket contains the quadrature W1, no certified critic
beats the exact W1 on the same samples, the report files exist and agree
with the printed line, two processes give the one-process value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 240
LIPSCHITZ_TOLERANCE = 1 + 1e-6
RATIO_TOLERANCE = 1 + 1e-5  # CrossCheck.sound's own rounding allowance

W1_LINE = re.compile(
    r"(?P<prefix>^.*?)W1: (?P<value>\S+)  (?P<pct>\d+)% CI \[(?P<lo>\S+), (?P<hi>\S+)\]  Lipschitz <= (?P<lip>\S+)$",
    re.M,
)


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run ``examples/<name>`` with ``--quick``; return its stdout (asserting exit status 0)."""
    python = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "PYTHON": python, "WDIST": f"{python} -m wdist", "TORCHRUN": f"{python} -m torch.distributed.run"}
    script = EXAMPLES / name
    launcher = [python] if script.suffix == ".py" else ["bash"]
    proc = subprocess.run([*launcher, str(script), "--quick", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def number(output: str, label: str) -> float:
    """The first number after ``label:`` at the start of a line."""
    match = re.search(rf"^{re.escape(label)}: (\S+)", output, re.M)
    assert match, f"no '{label}:' line in\n{output}"
    return float(match.group(1))


def w1_lines(output: str) -> list[dict]:
    lines = [{k: (float(v) if k not in ("prefix", "pct") else v) for k, v in m.groupdict().items()}
             for m in W1_LINE.finditer(output)]
    assert lines, f"no W1 line in\n{output}"
    return lines


def test_quick_start_interval_covers_the_closed_form(tmp_path):
    out = run_example("quick_start.py", cwd=tmp_path)
    truth = number(out, "truth")
    (w1,) = w1_lines(out)
    assert truth == pytest.approx(1.0, abs=1e-6)  # ||shift|| of the example
    assert w1["lo"] <= truth <= w1["hi"]
    assert w1["lo"] <= w1["value"] <= w1["hi"]
    assert w1["lip"] <= LIPSCHITZ_TOLERANCE
    assert number(out, "ratio value/truth") == pytest.approx(w1["value"] / truth, abs=1e-4)
    assert "CI covers truth: yes" in out


def test_custom_critic_is_certified_and_beats_the_linear_critic(tmp_path):
    out = run_example("custom_critic.py", cwd=tmp_path)
    truth = number(out, "truth")
    # E||X|| for X ~ N(0, I_2) is sqrt(pi / 2); the scale is 2, so W1 = sqrt(pi / 2).
    assert truth == pytest.approx(np.sqrt(np.pi / 2), abs=1e-6)
    for when in ("before", "after"):
        assert 0.999 <= number(out, f"lipschitz_bound {when} training") <= LIPSCHITZ_TOLERANCE
    lines = {w["prefix"].split()[0]: w for w in w1_lines(out)}
    custom, linear = lines["custom"], lines["linear"]
    assert custom["lip"] <= LIPSCHITZ_TOLERANCE and linear["lip"] <= LIPSCHITZ_TOLERANCE
    assert custom["lo"] <= truth  # a lower bound, up to the CLT error
    assert custom["value"] >= 0.6 * truth  # the nonlinear critic learns most of W1
    assert linear["hi"] < custom["lo"]  # equal means: a linear critic sees (almost) nothing
    assert "TypeError: lipschitz_bound cannot certify layer 1 of type Softplus" in out


def crosscheck_blocks(output: str) -> list[dict]:
    blocks = []
    for block in output.split("== ")[1:]:
        critic = re.search(r"^critic \((\S+)\): (\S+)", block, re.M)
        blocks.append({"title": block.splitlines()[0], "name": critic.group(1), "critic": float(critic.group(2)),
                       "exact": number(block, "exact"), "ratio": number(block, "ratio"),
                       "noise_floor": number(block, "noise floor"), "sound": "sound: True" in block})
    return blocks


def test_crosscheck_digits_no_critic_beats_exact_ot(tmp_path):
    out = run_example("crosscheck_digits.py", cwd=tmp_path)
    blocks = crosscheck_blocks(out)
    assert len(blocks) == 3
    for b in blocks:
        assert b["sound"] and b["ratio"] <= RATIO_TOLERANCE, b
        assert b["critic"] <= b["exact"] * RATIO_TOLERANCE
        assert b["ratio"] == pytest.approx(b["critic"] / b["exact"], abs=1e-5)
        assert b["noise_floor"] > 0.5  # 64-d: the sample W1 of one set against itself is far from 0
    auto, mlp, shifted = blocks
    assert auto["ratio"] >= 0.99 and mlp["ratio"] < auto["ratio"]
    assert auto["exact"] == mlp["exact"]
    assert shifted["exact"] == pytest.approx(0.05 * 8, abs=1e-6) == number(out, "translation truth")
    assert shifted["ratio"] >= 0.99


def quantile_w1(sample_p: np.ndarray, sample_q: np.ndarray) -> float:
    """1-D W1 between equal-size samples: mean gap of the sorted values (monotone coupling)."""
    return float(np.abs(np.sort(sample_p) - np.sort(sample_q)).mean())


def test_bracket_mixture_contains_the_quadrature_truth(tmp_path):
    out = run_example("bracket_mixture.py", cwd=tmp_path)
    truth = number(out, "truth")
    # The script's quadrature against an independent Monte Carlo value (10^6 samples per side).
    sys.path.insert(0, str(EXAMPLES))
    try:
        import bracket_mixture as example
    finally:
        sys.path.remove(str(EXAMPLES))
    rng = np.random.default_rng(123)
    sample_p = example.sample_mixture(10**6, example.MIXTURE_P, rng)[:, 0]
    sample_q = example.sample_mixture(10**6, example.MIXTURE_Q, rng)[:, 0]
    assert truth == pytest.approx(quantile_w1(sample_p, sample_q), abs=0.01)
    lower, upper = number(out, "lower"), number(out, "upper")
    assert lower <= truth <= upper
    assert "contains truth: yes" in out and "consistent: True" in out
    match = re.search(r"^W1 in \[(\S+), (\S+)\] \(95% bracket", out, re.M)
    assert match and float(match.group(1)) == pytest.approx(lower, rel=1e-5)
    assert float(match.group(2)) == pytest.approx(upper, rel=1e-5)


def test_folders_cli_writes_the_report(tmp_path):
    out = run_example("folders_cli.sh", str(tmp_path / "run"), cwd=tmp_path)
    for folder in ("low", "high"):
        assert len(list((tmp_path / "run" / folder).glob("digit_*.png"))) == 60
    # The CLI's line, then the same line quoted by the script from report.md.
    w1, quoted = [w for w in w1_lines(out) if not w["prefix"]]
    assert quoted == w1
    report = tmp_path / "run" / "report"
    for name in ("report.md", "curve.png", "witness.png", "result.json"):
        assert (report / name).stat().st_size > 0, name
    result = json.loads((report / "result.json").read_text())
    assert result["value"] == pytest.approx(w1["value"], rel=1e-5)
    assert result["lipschitz"] <= LIPSCHITZ_TOLERANCE and w1["lip"] <= LIPSCHITZ_TOLERANCE
    assert w1["lo"] > 0  # digits 0-4 and 5-9 differ, even on 30 + 30 test images
    assert len(w1_lines((report / "report.md").read_text())) == 1


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_two_processes_give_the_one_process_value(tmp_path):
    out = run_example("torchrun.sh", str(tmp_path / "run"), cwd=tmp_path)
    two, one = w1_lines(out)  # only rank 0 prints: one line per run
    assert "x 2 processes" in out
    two_json = json.loads((tmp_path / "run" / "two.json").read_text())
    one_json = json.loads((tmp_path / "run" / "one.json").read_text())
    assert (two_json["settings"]["world_size"], one_json["settings"]["world_size"]) == (2, 1)
    # The quick run uses the linear critic: the same value up to float32 sums.
    assert two_json["value"] == pytest.approx(one_json["value"], abs=1e-5)
    assert two["value"] == pytest.approx(one["value"], abs=1e-5)
    assert abs(number(out, "difference")) <= 1e-5
