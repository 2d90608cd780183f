# omgate: `make run` serves on https://localhost:8443, `make test` runs ruff, mypy and the tests
# (`make test-fast`: the unit tests alone, in-process, under a minute),
# `make image` builds the container image with podman, `make lock` pins the dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_CERTS := certs/dev
# What .venv holds: what running needs (requirements.txt), or that and what testing needs
# (requirements-dev.txt: the same pins and the test and lint tools, `make lock` keeps them
# so). pip says what it collects and installs, one line a package.
RUN_SET := $(VENV)/.installed-run
DEV_SET := $(VENV)/.installed-dev
# and `make bench`'s peer stack (requirements-bench.txt: gunicorn, uvicorn, uvloop, httptools)
BENCH_SET := $(VENV)/.installed-bench
PIP := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar off
# The lock files: exact versions with hashes, what the tests and the image are built with.
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11
IMAGE ?= localhost/omgate:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_OPTIONS ?=

.PHONY: run test test-fast lint venv dev-venv clean bench soak lock upgrade image

$(RUN_SET): pyproject.toml requirements.txt
	@echo "== .venv: what omgate needs to run (requirements.txt)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r requirements.txt
	$(PIP) --no-deps -e .
	touch $@

# The dev set holds the run set at the same pins: it stands for both.
$(DEV_SET): pyproject.toml requirements.txt requirements-dev.txt
	@echo "== .venv: what omgate needs to run and to be tested (requirements-dev.txt)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r requirements-dev.txt
	$(PIP) --no-deps -e .
	touch $@ $(RUN_SET)

# `make venv`: omgate and what it needs to run; `make dev-venv`: and the test tools.
venv: $(RUN_SET)
dev-venv: $(DEV_SET)

$(DEV_CERTS)/server.pem: | $(RUN_SET)
	$(BIN)/omgate pki dev --out $(DEV_CERTS)

run: $(RUN_SET) $(DEV_CERTS)/server.pem
	$(BIN)/omgate serve

lint: $(DEV_SET)
	@echo "== lint: ruff, mypy (strict, service/), the layers (lint-imports), hadolint"
	$(BIN)/ruff check .
	$(BIN)/mypy service
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint Dockerfile

# pytest's own progress: each file as it starts, a character per test, the closing count.
test: lint
	@echo "== tests: pytest (the slow ones start servers, build the image, run make itself)"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# tests/unit alone: in-process, no server, no lint (tests/system is what `make test` adds).
test-fast: $(DEV_SET)
	@echo "== tests: pytest tests/unit (in-process; make test runs tests/system as well)"
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Pins what pyproject.toml allows, keeping the current pins where they still fit;
# `make upgrade` moves every pin to the newest allowed version (then run `make test`).
# requirements.txt takes its pins from requirements-dev.txt, so the dev set holds the run set.
lock: $(DEV_SET)
	$(LOCK) $(LOCK_OPTIONS) --extra dev pyproject.toml -o requirements-dev.txt
	$(LOCK) $(LOCK_OPTIONS) --constraint requirements-dev.txt pyproject.toml -o requirements.txt
	$(LOCK) $(LOCK_OPTIONS) --extra bench --constraint requirements-dev.txt pyproject.toml \
	  -o requirements-bench.txt

upgrade:
	$(MAKE) lock LOCK_OPTIONS=--upgrade

# Builds $(IMAGE) with podman on a Debian base made by debootstrap (needs root); see
# scripts/build_image.py --help for IMAGE_OPTIONS.
image: $(RUN_SET)
	$(BIN)/python scripts/build_image.py --tag $(IMAGE) $(IMAGE_OPTIONS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache

$(BENCH_SET): $(DEV_SET) requirements-bench.txt
	@echo "== .venv: the peer stack of make bench (requirements-bench.txt)"
	$(PIP) --require-hashes -r requirements-bench.txt
	touch $@

# `make bench BENCH_ARGS='--only peer'` runs only the rows against the peer stack
# (bench/run.py --help lists the options).
bench: $(BENCH_SET)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# 30 minutes of mixed load on one worker, memory and descriptors printed a minute apart;
# fails when they grow (docs/PERFORMANCE.md, "Soak"). SOAK_ARGS="--minutes 5", or
# SOAK_ARGS="--rounds 10 --mode request --tls 1.2" for rounds of 500 connections instead.
SOAK_ARGS ?= --minutes 30
soak: $(DEV_SET)
	$(BIN)/python bench/soak.py $(SOAK_ARGS)
