"""Re-record tests/data/demo_quick.json, the pinned output of ``wdist demo --quick``.

Run it from the repository root (``.venv/bin/python tests/data/record_demo_quick.py``)
only for a change that is meant to move the demo's numbers, and say why in the commit:
the pin exists so that moving code does not move a number by accident.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

NOTE = ("wdist demo --quick after the critic's parameter average of issue 14 (EMA 0.99), "
        "timing removed; re-record with tests/data/record_demo_quick.py only for a change "
        "meant to move the number")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "demo")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run([sys.executable, "-m", "wdist", "demo", "--quick", "--out", out],
                              capture_output=True, text=True, env=env, check=True)
        lines = [re.sub(r"[0-9.]+ s on cpu", "<seconds> s on cpu", ln.replace(out, "<out>"))
                 for ln in proc.stdout.splitlines()]
        result = json.loads((Path(out) / "result.json").read_text().replace(out, "<out>"))
    result.pop("seconds")
    path = Path(__file__).with_name("demo_quick.json")
    path.write_text(json.dumps({"note": NOTE, "stdout": lines, "result": result}, indent=1) + "\n")
    print(f"{path}: {lines[0]}")


if __name__ == "__main__":
    main()
