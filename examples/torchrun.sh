#!/usr/bin/env bash
# One estimate on two processes: torchrun, gloo on CPU
# ====================================================
#
# `wdist estimate` runs as one job on several processes when started by
# torchrun (`python -m torch.distributed.run`):
#
#     torchrun --standalone --nproc_per_node 2 -m wdist estimate DIR_A DIR_B --json r.json
#
# Every rank draws the same train / validation / test split (same --seed),
# decodes only its strided share of the files, and the critic is wrapped in
# DistributedDataParallel (gloo on CPU, nccl with --device cuda).
# --batch-size stays the *global* batch per side (each rank takes
# batch[rank::world]), and held-out sums are all-reduced, so two processes
# compute what one process computes, up to the order of floating-point sums.
#
# This script writes scikit-learn's digits (8x8, no download) as two PNG
# folders, digits 0-4 and 5-9, runs the estimate once with torchrun on 2
# processes and once in a single process with the same seed, and prints
# both W1 lines and their difference in units of the standard error.
#
# What to look at: one W1 line from the 2-process run (only rank 0 prints and
# writes files), "x 2 processes" in its summary, "world_size": 2 in its JSON,
# and a difference of a small fraction of a standard error: the BCOP critic
# amplifies the rounding differences into a different, equally good critic
# (0.1 standard error apart in the project's runs; its tests allow 0.5).
#
# Usage:  examples/torchrun.sh [--quick] [OUT_DIR]     (default OUT_DIR:
# ./wdist-torchrun-example).  Full: 400 images per folder, 200 steps of the
# BCOP critic, both runs in about a minute on 2 CPU cores; --quick: 40 images
# per folder, 20 steps of the linear critic (which matches to about 1e-6).  PYTHON (default: python) writes the images and
# compares the results; TORCHRUN (default: torchrun) and WDIST (default:
# wdist) start the runs, e.g. TORCHRUN="python -m torch.distributed.run"
# WDIST="python -m wdist".  torchrun starts `-m wdist` with its own Python.
set -euo pipefail

PYTHON=${PYTHON:-python}
WDIST=${WDIST:-wdist}
TORCHRUN=${TORCHRUN:-torchrun}
QUICK=0
OUT=wdist-torchrun-example
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -*) echo "Error: unknown option $arg (usage: $0 [--quick] [OUT_DIR])" >&2; exit 2 ;;
        *) OUT=$arg ;;
    esac
done
if [ "$QUICK" = 1 ]; then PER_FOLDER=40; STEPS=20; CRITIC=linear; else PER_FOLDER=400; STEPS=200; CRITIC=bcop; fi
# One math thread per process: 2 processes on 2 cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

mkdir -p "$OUT"
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
    for i, image in enumerate(digits.images[wanted][:per_folder]):
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(folder / f"digit_{i:04d}.png")
print(f"wrote {per_folder} PNGs of 8x8 to {out}/low and {out}/high")
EOF

ARGS=(--grayscale --critic "$CRITIC" --seed 0 --steps "$STEPS" --batch-size 64)
echo "\$ torchrun --standalone --nproc_per_node 2 -m wdist estimate $OUT/low $OUT/high ${ARGS[*]} --json $OUT/two.json"
# $TORCHRUN and $WDIST unquoted on purpose: each may be a command with arguments.
$TORCHRUN --standalone --nproc_per_node 2 -m wdist estimate "$OUT/low" "$OUT/high" "${ARGS[@]}" --json "$OUT/two.json"
echo "\$ wdist estimate $OUT/low $OUT/high ${ARGS[*]} --json $OUT/one.json"
$WDIST estimate "$OUT/low" "$OUT/high" "${ARGS[@]}" --json "$OUT/one.json"

"$PYTHON" - "$OUT/two.json" "$OUT/one.json" <<'EOF'
import json
import sys

two, one = (json.load(open(path)) for path in sys.argv[1:3])
se = max(two["std_error"], one["std_error"])
print(f"world_size: {two['settings']['world_size']} vs {one['settings']['world_size']}")
print(f"value: {two['value']:.6f} (2 processes) vs {one['value']:.6f} (1 process)")
diff = abs(two["value"] - one["value"])
print(f"difference: {diff:.3g} = {diff / se:.3f} standard errors")
EOF
