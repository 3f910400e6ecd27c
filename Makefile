# The two commands a new machine needs:  make demo   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch from this machine's disk (an unpinned torch pulls a CUDA build)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install  ## install, generate the synthetic demo exports and run the nightly flow
	HF_HUB_OFFLINE=1 $(VENV)/bin/themes demo

test: install lint  ## install and run every test (slow ones included)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests pipelines benchmarks

bench: install  ## every benchmark in turn (hours; `python benchmarks/run_all.py --list`)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf var .pytest_cache
