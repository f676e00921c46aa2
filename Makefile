# Two commands on a fresh clone: `make run` (the main job on the bundled data) and `make test` (the suite).
# Both create .venv on first use with an up-to-date pip and the pinned stack (constraints.txt).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test dev lint install
$(BIN)/mlops-assets: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/mlops-assets

run: install
	$(BIN)/mlops-assets run --report .mlops/report.json

test: install
	$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=25

dev: install
	mkdir -p .mlops/dagster && cp -n dagster.yaml .mlops/dagster/dagster.yaml; DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true DAGSTER_HOME=$(CURDIR)/.mlops/dagster $(BIN)/dagster dev -m mlops_assets.definitions

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
