# Two commands for a fresh machine (README): `make demo` and `make test`.
# Each creates the virtual environment it needs in .venv and installs the package into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider -n 2
DEMO_ARGS ?=
# The JAX test run compiles thousands of small XLA programs; LLVM's optimisation passes
# take about half of each compilation and buy nothing at these sizes. Results stay within
# the tests' tolerances.
JAX_TEST_XLA_FLAGS ?= --xla_backend_optimization_level=0

.PHONY: demo test lint test-slow test-oracle benchmark docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-base: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks,export]"
	touch $@ $(VENV)/.installed-base

$(VENV)/.installed-docs: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@ $(VENV)/.installed-base

$(VENV)/.installed-oracle: setup.cfg pyproject.toml $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks,export,oracle]"
	touch $@

## Main job: export, serve and query the shipped pretrained spatial transformer network.
demo: $(VENV)/.installed-base
	$(BIN)/keras-attention-zoo demo $(DEMO_ARGS)

## Tests: everything but the `slow` cases on the TensorFlow backend, then the layer suite on JAX.
test: $(VENV)/.installed-test
	$(PYTEST) -m "not slow" tests
	KERAS_BACKEND=jax XLA_FLAGS=$(JAX_TEST_XLA_FLAGS) $(PYTEST) -m "not slow" tests/keras_attention

## Lint and format check (ruff, configured in pyproject.toml); CI runs it before the tests.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## The `slow` cases (CI runs them after `make test`).
test-slow: $(VENV)/.installed-test
	$(PYTEST) -m slow tests

## Live oracles (timm, torch) and the layer suite on the PyTorch backend; CI runs this too.
test-oracle: $(VENV)/.installed-oracle
	$(PYTEST) -m oracle tests
	KERAS_BACKEND=torch $(PYTEST) tests/keras_attention

## Layer latency against timm (needs the oracle extra); writes benchmarks/results/.
benchmark: $(VENV)/.installed-oracle
	$(BIN)/python benchmarks/layers_cpu.py

## The documentation site (mkdocs.yml, docs/): figures from benchmarks/results/*.json, then a
## strict build (a broken link or a docstring that does not render fails) into build/site.
docs: $(VENV)/.installed-docs
	$(BIN)/python docs/make_plots.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict  # not --quiet: it hides warnings from --strict

clean:
	rm -rf $(VENV) outputs build docs/results/img *.egg-info
