# Backprop — `make test` installs everything and runs lint, types and the whole suite;
# `make run` installs and starts the embedded service (API + one worker) on $(HOST):$(PORT).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install lint test run bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,torch]'
	touch $@

install: $(BIN)/.installed

# The service alone: no dev tools, no PyTorch (the reference for tests and benchmarks).
$(BIN)/.installed-service: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy core app worker

# Everything under tests/: unit, API, worker, integration (real PostgreSQL, Redis and
# Backprop processes) and the README walk-through.
test: lint
	$(BIN)/pytest -n 2 --durations=25

run: $(BIN)/.installed-service
	$(BIN)/backprop serve --host $(HOST) --port $(PORT)

bench: install
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
