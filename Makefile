# Two commands do everything on a fresh machine:
#   make demo   - local control plane + operator + gateway + engine simulators + example traffic
#   make test   - lint, types, layer contracts, unit and integration tests (against a real cluster)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo deps binaries venv lint unit integration bench cluster-up cluster-down clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@echo "==> installing the Python environment in $(VENV)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Debian packages: Prometheus (scrapes the gateway and engines in tests) and Lua 5.1 (runs the
# Argo CD health check the way Argo CD's gopher-lua does).
deps:
	@command -v prometheus >/dev/null && command -v lua5.1 >/dev/null || { \
	  echo "==> installing prometheus and lua5.1 from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus lua5.1 >/dev/null; }
	@systemctl disable --now prometheus >/dev/null 2>&1 || true

binaries: venv
	bash e2e/cluster/build-binaries.sh >/dev/null

lint: venv
	$(BIN)/ruff check operator tests e2e
	$(BIN)/ruff format --check operator tests e2e
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/tidepool crd --check

test: venv deps binaries lint
	$(BIN)/pytest -q -p no:cacheprovider

unit: venv
	$(BIN)/pytest -q tests/unit

demo: venv deps binaries
	$(BIN)/python e2e/demo.py

bench: venv deps binaries
	for b in e2e/bench/bench_*.py; do echo "==> $$b"; $(BIN)/python $$b || exit 1; done

cluster-up: venv binaries
	bash e2e/cluster/up.sh tidepool-dev

cluster-down:
	bash e2e/cluster/down.sh tidepool-dev

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
