#!/usr/bin/env bash
# Two image folders from the shell: `wdist estimate DIR_A DIR_B --report OUT`
# ===========================================================================
#
# Writes scikit-learn's handwritten digits (8x8, shipped with scikit-learn,
# no download) as two folders of grayscale PNGs, digits 0-4 in `low/` and
# digits 5-9 in `high/`, then runs
#
#     wdist estimate low high --grayscale --seed 0 --steps N --report report
#
# which trains certified 1-Lipschitz critics on half of each folder and
# prints the held-out estimate of a lower bound on W1 between the two image
# distributions:
#
#     W1: <value>  95% CI [<lower>, <upper>]  Lipschitz <= <L>
#
# Units: pixels are read into [0, 1] and W1 is the L2 distance over all
# C*H*W = 64 values (no hidden normalisation).  The same --seed gives the
# same value.  `--report DIR` writes report.md (the W1 line, settings, the
# training curve and the witness grid: the images of each folder that the
# critic scores highest and lowest, i.e. where the two folders differ most),
# curve.png, witness.png and result.json.
#
# What to look at: the printed W1 line, the files listed at the end, and
# "value" / "lipschitz" in result.json.  The held-out value (about 1.35) is
# below the in-sample exact W1 of examples/crosscheck_digits.py (2.2), as
# a held-out lower bound should be.
#
# Usage:  examples/folders_cli.sh [--quick] [OUT_DIR]     (default OUT_DIR:
# ./wdist-folders-example).  Full: all 1797 digits, 300 steps, about a
# minute on 2 CPU cores; --quick: 60 images per folder, 30 steps.
# PYTHON (default: python) writes the images; WDIST (default: wdist) is the
# CLI, e.g. WDIST="python -m wdist".
set -euo pipefail

PYTHON=${PYTHON:-python}
WDIST=${WDIST:-wdist}
QUICK=0
OUT=wdist-folders-example
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -*) echo "Error: unknown option $arg (usage: $0 [--quick] [OUT_DIR])" >&2; exit 2 ;;
        *) OUT=$arg ;;
    esac
done
if [ "$QUICK" = 1 ]; then PER_FOLDER=60; STEPS=30; else PER_FOLDER=0; STEPS=300; fi

mkdir -p "$OUT"
# Digits as 8-bit PNGs: the 0-16 values scaled to 0-255 (rounded).
"$PYTHON" - "$OUT" "$PER_FOLDER" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

out, per_folder = Path(sys.argv[1]), int(sys.argv[2])
digits = load_digits()
for name, wanted in (("low", digits.target < 5), ("high", digits.target >= 5)):
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("digit_*.png"):
        old.unlink()
    images = digits.images[wanted][: per_folder or None]
    for i, image in enumerate(images):
        pixels = np.round(image * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{i:04d}.png")
    print(f"wrote {len(images)} PNGs of 8x8 to {folder}")
EOF

rm -rf "$OUT/report"
echo "\$ wdist estimate $OUT/low $OUT/high --grayscale --seed 0 --steps $STEPS --report $OUT/report"
# $WDIST unquoted on purpose: it may be a command with arguments ("python -m wdist").
$WDIST estimate "$OUT/low" "$OUT/high" --grayscale --seed 0 --steps "$STEPS" --report "$OUT/report"

echo "files written:"
ls -1 "$OUT/report"
echo "report.md begins:"
head -n 12 "$OUT/report/report.md"
