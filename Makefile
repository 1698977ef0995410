# One command each: `make run` (the main job: sampler comparison), `make test` (the fast tier of
# the suite) and `make test-all` (every test, what CI runs); each creates .venv and installs the
# package with its pinned dependencies first. The tests run in two pytest-xdist workers, whole
# files per worker (module fixtures train their models once); a crashed worker is not restarted
# (--max-worker-restart=0): the run reports it and ends instead of waiting on the replacement.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-all lint install clean

WORKDIR ?= runs/compare_samplers

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.compare_samplers --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile --max-worker-restart=0 -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile --max-worker-restart=0 tests

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .jax_cache
