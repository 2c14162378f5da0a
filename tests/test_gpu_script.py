"""benchmarks/gpu.py, the one device check of issue 15, must not rot between GPU sessions:
its --quick mode runs every section's code path at tiny sizes on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ["env", "folders", "certificate", "layers", "e2e32", "tests", "tightness", "checkpoint", "levers",
            "ddp", "e2e32_bcop", "e2e64"]


@pytest.mark.slow
def test_gpu_check_quick_mode_writes_every_section(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("WDIST_TEST_DEVICE", None)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--quick", "--device", "cpu",
                           "--budget", "600", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-quick.json").read_text())
    sections = report["sections"]
    assert list(sections) == SECTIONS
    failed = {name: s["error"] for name, s in sections.items() if s["status"] != "ok"}
    assert not failed, failed
    assert report["meta"]["torch"] and report["meta"]["device"] == "cpu"
    # Each section measured what it is for.
    cert = sections["certificate"]["data"]
    assert 1 - 1e-3 <= cert["sv_min"] <= cert["sv_max"] <= 1 + 1e-4  # BCOP / Björck: every singular value 1
    assert cert["bcop_inside"] and cert["linear_inside"]
    assert {r["precision"] for r in sections["layers"]["data"]["layers"]} == {"fp32", "bf16"}
    assert all(r["bcop_train_ratio"] > 0 for r in sections["layers"]["data"]["layers"])
    for name in ("e2e32", "e2e32_bcop", "e2e64"):
        runs = sections[name]["data"].values()
        assert runs and all(r["returncode"] == 0 and "value" in r for r in runs), name
    assert sections["tests"]["data"]["returncode"] == 0 and sections["tests"]["data"]["tests"] >= 3
    assert sections["checkpoint"]["data"]["inside"] and sections["checkpoint"]["data"]["same_history"]
    tight = sections["tightness"]["data"]["rows"]
    assert len(tight) == 1 and tight[0]["lower_ok"] and tight[0]["lipschitz"] <= 1 + 1e-4, tight
    assert 0.3 < tight[0]["ratio"] < 1.2 and tight[0]["steps"] == 20  # the D=16 funnel pair after 20 steps
    assert len(sections["levers"]["data"]["rows"]) == 6
    ddp = sections["ddp"]
    assert any(row[0].startswith("torchrun, 2 processes") for row in ddp["rows"]), ddp["lines"]  # DDP ran
    markdown = (tmp_path / "gpu-quick.md").read_text()
    for name in SECTIONS:
        assert f"## {name}: " in markdown
