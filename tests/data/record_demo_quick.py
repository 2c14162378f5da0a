"""Re-record tests/data/demo_quick.json, the pinned output of ``wdist demo --quick``.

Run it from the repository root (``.venv/bin/python tests/data/record_demo_quick.py``)
only for a change that is meant to move the demo's numbers, and say why in the commit:
the pin exists so that moving code does not move a number by accident.  The output is
normalised by the same helper the pinning test uses (``helpers.demo_quick_output``).
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import demo_quick_output  # noqa: E402 (tests/ on the path first)

NOTE = ("wdist demo --quick after the MLP critic's learning rate became 3e-3 and the plateau rule a window (issue 14), "
        "timing removed; re-record with tests/data/record_demo_quick.py only for a change "
        "meant to move the number")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lines, result = demo_quick_output(Path(tmp) / "demo")
    path = Path(__file__).with_name("demo_quick.json")
    path.write_text(json.dumps({"note": NOTE, "stdout": lines, "result": result}, indent=1) + "\n")
    print(f"{path}: {lines[0]}")


if __name__ == "__main__":
    main()
