# Two commands do everything on a fresh machine:
#   make demo   - local control plane + operator + gateway + engine simulators + example traffic
#   make test   - lint, types, layer contracts, unit and integration tests (against a real cluster)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo deps binaries images lock chart-docs venv lint unit integration bench cluster-up cluster-down clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@echo "==> installing the Python environment in $(VENV)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Debian packages: Prometheus (scrapes the gateway and engines in tests), Lua 5.1 (runs the
# Argo CD health check the way Argo CD's gopher-lua does), and podman, mmdebstrap and runc
# (build and run the images without a Docker engine or a registry; see images/build.sh).
DEBS := prometheus lua5.1 podman mmdebstrap runc
# actionlint checks .github/workflows (tests/unit/test_workflows.py); cached outside the repo by
# version, like the Kubernetes binaries.
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := $(HOME)/.cache/tidepool/tools/actionlint-$(ACTIONLINT_VERSION)/actionlint
# helm-docs writes the chart README's values table from values.yaml (make chart-docs; a test
# fails when it is stale). Also a Go module, cached by version.
HELM_DOCS_VERSION := v1.14.2
HELM_DOCS := $(HOME)/.cache/tidepool/tools/helm-docs-$(HELM_DOCS_VERSION)/helm-docs
deps:
	@command -v prometheus >/dev/null && command -v lua5.1 >/dev/null && command -v podman >/dev/null \
	  && command -v mmdebstrap >/dev/null && command -v runc >/dev/null || { \
	  echo "==> installing $(DEBS) from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; }
	@systemctl disable --now prometheus >/dev/null 2>&1 || true
	@test -x $(ACTIONLINT) || { echo "==> building actionlint $(ACTIONLINT_VERSION) (Go module)"; \
	  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN=$(dir $(ACTIONLINT)) \
	  go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION); }
	@test -x $(HELM_DOCS) || { echo "==> building helm-docs $(HELM_DOCS_VERSION) (Go module)"; \
	  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN=$(dir $(HELM_DOCS)) \
	  go install github.com/norwoodj/helm-docs/cmd/helm-docs@$(HELM_DOCS_VERSION); }

# The chart README's values table, from values.yaml's `# --` comments (README.md.gotmpl).
chart-docs: deps
	cd charts/tidepool && $(HELM_DOCS) --chart-search-root . --template-files README.md.gotmpl

# The operator, gateway and engine-sim images, with podman from a locally bootstrapped base.
# Cached outside the repo by content (~/.cache/tidepool/images and podman's storage), so an
# unchanged tree builds nothing; tests/integration/test_container_images.py runs them.
images: deps
	bash images/build.sh >/dev/null

# Re-lock the images' dependencies (every file pinned by hash) after editing pyproject.toml.
lock:
	$(PY) -m venv $(HOME)/.cache/tidepool/pip-tools
	$(HOME)/.cache/tidepool/pip-tools/bin/pip install -q pip-tools
	$(HOME)/.cache/tidepool/pip-tools/bin/pip-compile -q --generate-hashes --strip-extras \
	  --no-emit-index-url --no-header -o images/requirements.lock pyproject.toml
	$(HOME)/.cache/tidepool/pip-tools/bin/pip-compile -q --generate-hashes --allow-unsafe \
	  --no-emit-index-url --no-header --only-build-deps --build-deps-for wheel \
	  -o images/build-requirements.lock pyproject.toml

binaries: venv
	bash e2e/cluster/build-binaries.sh >/dev/null

lint: venv
	$(BIN)/ruff check operator tests e2e
	$(BIN)/ruff format --check operator tests e2e
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/tidepool crd --check

test: venv deps binaries images lint
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
