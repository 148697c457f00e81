# Backprop — `make test` installs everything and runs lint, types and the whole suite;
# `make run` installs and starts the embedded service (API + one worker) on $(HOST):$(PORT).
# Both install pyproject.toml at the versions pinned in requirements/lock.txt, as the Docker
# image does; `make lock` regenerates the lock after a change to pyproject.toml.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install lint test fuzz run bench lock clean

LOCK := requirements/lock.txt

$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[dev,torch]'
	touch $@

install: $(BIN)/.installed

# The service alone: no dev tools, no PyTorch (the reference for tests and benchmarks).
$(BIN)/.installed-service: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) -e .
	touch $@

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy core app worker backprop_client

# Everything under tests/: unit, API, worker, integration (real PostgreSQL, Redis and
# Backprop processes) and the README walk-through.
test: lint
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25

# tests/contract with a large budget: 200 examples per operation and phase, and the
# coverage phase over the JobSpec bodies too (CI runs 5 examples, without it).
FUZZ_EXAMPLES ?= 200
fuzz: install
	BACKPROP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) BACKPROP_FUZZ_STATEFUL_STEPS=20 BACKPROP_FUZZ_FULL=1 \
		$(BIN)/pytest -n 0 --durations=10 tests/contract

run: $(BIN)/.installed-service
	$(BIN)/backprop serve --host $(HOST) --port $(PORT)

# One lock for every platform and extra (dev, torch, gpu), resolved by uv for Python 3.11+;
# pins already in the lock are kept unless pyproject.toml rules them out. It needs only uv
# (pinned by the lock itself), so a pyproject.toml that the old lock contradicts still locks.
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) uv

lock: $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --universal --all-extras --python-version 3.11 \
		--custom-compile-command 'make lock' --quiet --output-file $(LOCK)

bench: install
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
