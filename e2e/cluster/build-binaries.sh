#!/usr/bin/env bash
# Build the local control plane's binaries from the Go module proxy, once per pinned version.
#
# Why: there is no Docker engine and no release download on the dev/CI machines, but the Go
# module proxy is reachable. kube-apiserver & co. cannot be `go install`ed (their go.mod
# carries staging `replace`s), so we build them from a throw-away consumer module that
# pins every staging module to its published v0.X.Y tag.
#
# Output: $TIDEPOOL_CACHE/k8s-$K8S_VERSION/bin/{etcd,kube-apiserver,kube-controller-manager,
#         kube-scheduler,kubectl,kwok,kwokctl,helm}
# The cache lives outside the repo and is keyed by version, so a second run is a no-op.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE_ROOT="${TIDEPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidepool}"
BIN="$CACHE_ROOT/k8s-$K8S_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin"
export GOTOOLCHAIN=local CGO_ENABLED=0

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
elapsed() { echo "$(( $(date +%s) - START ))s"; }
START=$(date +%s)

have_all() {
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl helm; do
    [[ -x "$BIN/$b" ]] || return 1
  done
}

if have_all; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"

# One build at a time per cache: a second caller (another test session, `make demo`) waits for
# the first and then finds everything built, instead of compiling the same thing twice.
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
  step "another build of $BIN is running; waiting for it"
  flock 9
fi
if have_all; then
  echo "$BIN"
  exit 0
fi

MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
STAGING_TAG="v0.${K8S_VERSION#v1.}"
WORK="$CACHE_ROOT/build-$K8S_VERSION"
mkdir -p "$WORK"
cd "$WORK"

if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/etcd" ]]; then
  step "[1/4] resolving k8s.io/kubernetes@$K8S_VERSION and its staging modules ($(elapsed))"
  GOMOD_PATH="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  GO_LINE="$(grep -E '^go [0-9]' "$GOMOD_PATH" | head -1)"
  {
    echo "module tidepool.invalid/kubebins"
    echo
    echo "$GO_LINE"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$GOMOD_PATH" | awk -v tag="$STAGING_TAG" '{print "\t" $1 " => " $1 " " tag}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  step "[2/4] downloading modules (go mod tidy) ($(elapsed))"
  go mod tidy
  CB=k8s.io/component-base/version
  CG=k8s.io/client-go/pkg/version
  LD="-s -w -X $CB.gitVersion=$K8S_VERSION -X $CB.gitMajor=1 -X $CB.gitMinor=$MINOR -X $CB.gitTreeState=clean \
      -X $CB.buildDate=1970-01-01T00:00:00Z -X $CG.gitVersion=$K8S_VERSION -X $CG.gitMajor=1 -X $CG.gitMinor=$MINOR"
  step "[3/4] compiling etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ($(elapsed))"
  go build -trimpath -ldflags="-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  echo "    etcd done ($(elapsed))" >&2
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    go build -trimpath -tags=selinux,notest -ldflags="$LD" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    echo "    $cmd done ($(elapsed))" >&2
  done
fi

step "[4/4] go install kwok, kwokctl $KWOK_VERSION and helm $HELM_VERSION ($(elapsed))"
GOBIN="$BIN" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
GOBIN="$BIN" go install -trimpath -ldflags="-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
step "built in $(elapsed); disk: $(du -sh "$BIN" | cut -f1) binaries, $(du -sh "$(go env GOMODCACHE)" | cut -f1) module cache, $(du -sh "$(go env GOCACHE)" | cut -f1) build cache"
echo "$BIN"
