#!/usr/bin/env bash
# On the GPU machine (no registry): install the carried wheels beside the
# image's packages, never over them (--target: the CUDA torch stays), run the
# device check and copy its results (and log) to $OUT when the device tool
# sets it.  Extra arguments go to benchmarks/gpu.py (e.g. --only layers --budget 200).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/wdist-site .whl/*.whl || exit 3
# The project itself is not pip-installed: its build needs setuptools>=77 (PEP 639
# license field), which the image may lack; the source tree on PYTHONPATH is enough.
export PYTHONPATH="$PWD:/tmp/wdist-site${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, ot, wdist; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), '| POT', ot.__version__, '| wdist', wdist.__file__)" || exit 4
log=${OUT:-/tmp}/gpu.log
python3 benchmarks/gpu.py "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu.md benchmarks/results/gpu.json "$OUT"/ 2>/dev/null || true
fi
exit "$status"
