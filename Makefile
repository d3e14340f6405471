# One-command entry points. Each target sets up what it needs (virtualenv, tools) itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit tools proto schema bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## demo: the supervisor on config/examples/multi.yml with the local kubelet stand-in (Ctrl-C stops)
demo: $(STAMP)
	$(BIN)/widget-supervisor demo

## tools: helm, prometheus/promtool (test-only; linked or unpacked into .tools/, no root needed)
tools:
	bash scripts/install-tools.sh

## lint: ruff and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: everything CI runs: lint, then the whole pytest suite
test: $(STAMP) tools lint
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/pytest

## unit: the fast loop: pytest without the slow and network tests, no lint, no tool installation
unit: $(STAMP)
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/pytest -m "not slow and not network"

## schema: regenerate the chart's values.schema.json from supervisor/config.schema.json
schema: $(STAMP)
	$(BIN)/python -m supervisor.schema_gen --chart charts/widget-plugin

## proto: regenerate the gRPC stubs from plugin_worker/_proto/*.proto
proto: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/gen-proto.sh

## bench: the benchmark suite (prints a table, writes bench/results/*.json)
bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache dist build
