# The two commands of the README: `make demo` and `make test`. Both set everything up.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test up lint bench bench-activation services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tessera demo

up: $(STAMP)
	$(BIN)/tessera up

services:
	bash scripts/ensure-services.sh

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) services lint
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP) services
	$(BIN)/python bench/pipeline.py

bench-activation: $(STAMP)
	$(BIN)/python bench/activation.py

clean:
	rm -rf $(VENV) data
