# Every install step lives here: a clean clone needs only python3 (>= 3.10).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Two torch processes on two cores slow each other down badly; keep one
# OpenMP pool the size of the machine unless the caller says otherwise.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install bench-install demo test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Optional: the packages benchmarks/ compares against (not needed by tests).
bench-install: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'

demo: $(STAMP)
	$(VENV)/bin/wdist demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) demo-output .pytest_cache build *.egg-info
