# The two commands of the README: `make demo` and `make test`. Both set everything up.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-faults up lint bench bench-activation bench-soak services clean

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

# Fault tests: SIGKILL each service, restart the broker and the database, a destination
# down for minutes, under steady load, on a private RabbitMQ node and PostgreSQL cluster
# (never the machine's shared ones). Time budget: 15 minutes (7 measured, 411 s, with the
# destination down 120 s; TESSERA_FAULT_DESTINATION_DOWN_S shortens it).
FAULT_BUDGET_S ?= 900
test-faults: $(STAMP)
	TESSERA_FAULT_TESTS=1 timeout $(FAULT_BUDGET_S) $(BIN)/pytest -q -s -p no:cacheprovider tests/faults

bench-soak: $(STAMP) services
	$(BIN)/python bench/soak.py

bench: $(STAMP) services
	$(BIN)/python bench/pipeline.py

bench-activation: $(STAMP)
	$(BIN)/python bench/activation.py

clean:
	rm -rf $(VENV) data
