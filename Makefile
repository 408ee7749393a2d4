# Each target creates the virtual environment it needs, so both work on a fresh machine.
PYTHON ?= python3
FIXTURES ?= $(or $(STEPVIDEO_FIXTURES),../shared/fixtures/reference)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench parity clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job on the embedded default: the shipped demo model, a bundled image and prompt -> MP4.
demo: $(STAMP)
	$(PY) sample.py --config=demo

# Lint (ruff, configured in pyproject.toml), then the whole test suite (needs ../shared/fixtures/reference,
# or STEPVIDEO_FIXTURES).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# CI runs `make test`: everything but the tests marked slow (a representative set of each area stays in), on
# two pytest-xdist workers (a test file stays on one worker, so its module fixtures are built once); the
# slowest tests are listed at the end.
PYTEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist=loadfile --durations=20 -m "not slow" tests

# Every test, the slow ones included (tens of minutes on 2 cores).
test-all: lint
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist=loadfile --durations=20 tests

# Parity of every reference fixture through the converter.
parity: $(STAMP)
	$(PY) -m stepvideo_jax.tools.parity $(patsubst %.json,%,$(wildcard $(FIXTURES)/*.json))

bench: $(STAMP)
	$(PY) -m benchmarks

clean-venv:
	rm -rf $(VENV)
