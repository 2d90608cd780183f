# omgate: `make run` serves on https://localhost:8443, `make test` runs ruff, mypy and the tests,
# `make image` builds the container image with podman, `make lock` pins the dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_CERTS := certs/dev
# The lock files: exact versions with hashes, what the tests and the image are built with.
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11
IMAGE ?= localhost/omgate:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_OPTIONS ?=

.PHONY: run test lint venv clean bench lock upgrade image

$(BIN)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

venv: $(BIN)/.installed

$(DEV_CERTS)/server.pem: | $(BIN)/.installed
	$(BIN)/omgate pki dev --out $(DEV_CERTS)

run: $(BIN)/.installed $(DEV_CERTS)/server.pem
	$(BIN)/omgate serve

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy service
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Pins what pyproject.toml allows, keeping the current pins where they still fit;
# `make upgrade` moves every pin to the newest allowed version (then run `make test`).
lock: $(BIN)/.installed
	$(LOCK) $(LOCK_OPTIONS) pyproject.toml -o requirements.txt
	$(LOCK) $(LOCK_OPTIONS) --extra dev pyproject.toml -o requirements-dev.txt

upgrade:
	$(MAKE) lock LOCK_OPTIONS=--upgrade

# Builds $(IMAGE) with podman on a Debian base made by debootstrap (needs root); see
# scripts/build_image.py --help for IMAGE_OPTIONS.
image: $(BIN)/.installed
	$(BIN)/python scripts/build_image.py --tag $(IMAGE) $(IMAGE_OPTIONS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py
