# `make test` and `make demo` do all set-up on a fresh machine: a .venv with the
# pinned torch/torchvision wheels (on this machine's disk: any other version makes
# pip download several GB of CUDA builds), then this package with every extra.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# KERAS_BACKEND is fixed per process: the whole suite runs on TensorFlow, then the
# tests marked keras_backend run again in one process per other backend (a representative
# preset of each architecture kind there: tests/support.py). Lint first: it takes a second.
# --durations=25 prints the 25 slowest tests of each run.
PYTEST := $(BIN)/python -m pytest -n 2 -q --durations=25

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(STAMP)

test: install
	$(BIN)/ruff check .
	KERAS_BACKEND=tensorflow $(PYTEST) tests
	KERAS_BACKEND=jax $(PYTEST) -m keras_backend tests
	KERAS_BACKEND=torch $(PYTEST) -m keras_backend tests

demo: install
	$(BIN)/resnet-rosetta demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
