"""The known-truth benchmark's quick mode: it runs, and every row is honest."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_known_truth_quick_writes_honest_rows(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "known_truth.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "known_truth-quick.json").read_text())["rows"]
    assert {r["regime"] for r in rows.values()} == {"finite", "sampler"}
    for row in rows.values():
        assert row["lipschitz"] <= 1 + 1e-4
        assert row["lower"] <= row["truth"] + 3 * row["truth_se"]  # a certified lower bound
        assert 0 < row["ratio"] < 1.2
    assert (tmp_path / "known_truth-quick.md").read_text().count("\n|") >= len(rows) + 1
    assert (tmp_path / "known_truth-quick.png").stat().st_size > 10_000
