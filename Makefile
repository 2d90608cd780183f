# omgate: `make run` serves on https://localhost:8443, `make test` runs ruff and the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_CERTS := certs/dev

.PHONY: run test lint venv clean bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

$(DEV_CERTS)/server.pem: | $(BIN)/.installed
	$(BIN)/omgate pki dev --out $(DEV_CERTS)

run: $(BIN)/.installed $(DEV_CERTS)/server.pem
	$(BIN)/omgate serve

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py
