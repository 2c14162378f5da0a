#!/usr/bin/env bash
# Here (a machine with registry access), before the device call of issue 15:
# put the wheels the GPU machine lacks into the ignored folder .whl/ and check
# that the working tree plus .whl/ fits the device tool's 64 MiB carry limit.
#
# The GPU image has Python 3.12, a CUDA torch, numpy, scipy, scikit-learn,
# matplotlib, pillow, click, tqdm, safetensors, pytest and pytest-timeout
# (.library/device/KINDS.md) but no POT, and reaches no registry.  POT is the
# one wheel to carry (33 MB; it needs only numpy and scipy, both there).
# pytest-timeout (pyproject's `timeout = 900`) is in the image's package list,
# so it is not carried; without the plugin that ini option only warns
# ("Unknown config option: timeout"), so the tests run either way.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p .whl
if ! ls .whl/pot-0.9.7.post1-*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip download -q POT==0.9.7.post1 --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .whl/
fi
git check-ignore -q .whl/ || { echo "Error: .whl/ is not ignored by git (add /.whl/ to .gitignore)" >&2; exit 2; }
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb | tail -1 | cut -f1)
wheels=$(du -sb .whl | cut -f1)
total=$(( tree + ${untracked:-0} + wheels ))
echo "travels: tracked ${tree} B + untracked ${untracked:-0} B + .whl ${wheels} B = $(( total / 1048576 )) MiB (limit 64 MiB)"
if [ "$total" -ge $(( 64 * 1048576 )) ]; then
    echo "Error: over the 64 MiB limit" >&2
    exit 2
fi
ls -l .whl/
echo 'device call: run(command="bash benchmarks/gpu_device.sh", carry=[".whl"], timeout_s=600)'
