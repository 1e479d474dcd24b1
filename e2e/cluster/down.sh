#!/usr/bin/env bash
# Stop and delete Tidepool's local cluster (and any of its processes kwokctl left behind).
# Usage: e2e/cluster/down.sh [NAME]   (default tidepool-demo)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
exec "$PYTHON" "$REPO/e2e/localcluster.py" down "${1:-tidepool-demo}"
