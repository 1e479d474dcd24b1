#!/usr/bin/env bash
# Start Tidepool's local cluster: build the pinned binaries if needed (progress on stderr), run
# kwokctl --runtime=binary on 127.0.0.1, add the fake GPU nodes, apply crds/*.yaml.
# Prints the kubeconfig path on stdout, so:  export KUBECONFIG=$(e2e/cluster/up.sh tidepool-demo)
# Usage: e2e/cluster/up.sh [NAME] [--no-crds]   (default tidepool-demo; tests use tidepool-test themselves)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
exec "$PYTHON" "$REPO/e2e/localcluster.py" up "${1:-tidepool-demo}" "${@:2}"
