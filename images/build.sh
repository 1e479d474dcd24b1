#!/usr/bin/env bash
# Build the operator, gateway and engine-sim images with podman: no Docker engine, no registry.
#
# Why this shape: the development and CI machines have neither a Docker engine nor a reachable
# container registry, but Debian's podman, mmdebstrap and runc work. So
#   1. the base image is made here: mmdebstrap bootstraps Debian bookworm (python3, venv,
#      CA certificates) from the Debian mirror apt already uses, and `podman import` tags it;
#   2. every build runs with --pull=never against that base, with the machine's CA bundle
#      mounted read-only so that pip reaches the package index (the images do not keep it);
#   3. runc, not crun, through a containers.conf of our own (CONTAINERS_CONF; /etc is left
#      alone): crun refuses hybrid cgroup hosts, and podman's default ulimits exceed the
#      hard limits of these machines.
#
# Caching: the base tarball lives in $TIDEPOOL_CACHE/images (outside the repository), keyed by
# suite and package list; the images are tagged <version>-<content key>, where the key hashes
# everything the build reads (Dockerfile, locks, pyproject, README, LICENSE, operator/). A
# second run with the same sources finds the three tags in podman's storage and builds nothing;
# a source edit rebuilds from podman's layer cache (the locked dependencies stay cached).
#
# Output on stdout, one line per image: `<target>=<image reference>`. Progress goes to stderr.
# Usage: images/build.sh [--print-conf]   (--print-conf: print the CONTAINERS_CONF path only)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_ROOT="${TIDEPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidepool}"
CACHE="$CACHE_ROOT/images"
SUITE=bookworm
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
# No Recommends, docs, man pages or locales (copyrights stay), and no usrmerge once /usr is
# merged: it keeps perl (46 MB) in the image for nothing.
BOOTSTRAP_OPTS=(--variant=minbase --aptopt='APT::Install-Recommends "false"'
  --customize-hook='chroot "$1" apt-get -qq -y purge usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl >/dev/null'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*')
TARGETS=(operator gateway engine-sim)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
START=$(date +%s)
elapsed() { echo "$(($(date +%s) - START))s"; }

mkdir -p "$CACHE"
# pip settings of this machine's own Python would leak into the build steps' environment.
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL
export CONTAINERS_CONF="$CACHE/containers.conf"
cat > "$CONTAINERS_CONF.tmp" <<'EOF'
# Written by images/build.sh: runc (crun fails on hybrid cgroups) and ulimits within the
# machine's hard limits.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
if [[ "${1:-}" == "--print-conf" ]]; then
  echo "$CONTAINERS_CONF"
  exit 0
fi

for tool in podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run \`make deps\`" >&2; exit 1; }
done

# One build at a time per cache: a second caller waits, then finds the images built.
exec 9>"$CACHE/.build.lock"
flock 9

# -- 1. the base ----------------------------------------------------------------------------
# The Debian mirror apt is configured with (never a hard-coded host).
mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null \
  | awk -v s="$SUITE" '$2 == s {print $1; exit}')"
base_key="$(printf '%s ' "$SUITE" "$PACKAGES" "${BOOTSTRAP_OPTS[@]}" | sha256sum | cut -c1-12)"
base="tidepool-base:$SUITE-$base_key"
if ! podman image exists "$base"; then
  tarball="$CACHE/base-$SUITE-$base_key.tar"
  if [[ ! -s "$tarball" ]]; then
    [[ -n "$mirror" ]] || { echo "no apt source for $SUITE found (apt-get indextargets)" >&2; exit 1; }
    step "bootstrapping the $SUITE base with mmdebstrap ($(elapsed))"
    mmdebstrap --quiet "${BOOTSTRAP_OPTS[@]}" --include="$PACKAGES" "$SUITE" "$tarball.tmp.tar" "$mirror" >&2  # the .tar suffix picks the format
    mv "$tarball.tmp.tar" "$tarball"
  fi
  step "importing $base ($(elapsed))"
  podman import --quiet --change 'ENV LANG=C.UTF-8' "$tarball" "$base" >/dev/null
fi

# -- 2. the content key ---------------------------------------------------------------------
cd "$REPO"
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
key="$(
  {
    printf '%s\0' images/Dockerfile images/requirements.lock images/build-requirements.lock images/vllm-shim.py \
      pyproject.toml README.md LICENSE .dockerignore
    find operator -type f ! -name '*.py[cod]' ! -path '*/__pycache__/*' ! -path '*/.*' -print0
  } | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12
)"
tag="$version-$key"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"

# -- 3. the images --------------------------------------------------------------------------
for target in "${TARGETS[@]}"; do
  image="tidepool/$target:$tag"
  if podman image exists "$image"; then
    step "$image is cached"
  else
    step "building $image ($(elapsed))"
    podman build --quiet --pull=never --target "$target" \
      --build-arg PYTHON_IMAGE="$base" \
      --build-arg VERSION="$version" \
      --build-arg REVISION="$revision" \
      --build-arg SOURCE="${TIDEPOOL_SOURCE_URL:-}" \
      --volume "$CA_BUNDLE:$CA_BUNDLE:ro" \
      --file images/Dockerfile --tag "$image" . >/dev/null
  fi
  echo "$target=$image"
done
# Older builds of these images would pile up with every source change: drop those made more
# than 12 hours ago (another checkout's test run may be using a recent one; an image a
# container still uses is kept, no --force). Untagged build stages stay: they are the layer
# cache (the locked dependencies) and differ from each other by a few megabytes of wheel.
podman images --filter until=12h --format '{{.Repository}}:{{.Tag}}' \
  | grep -E '^(localhost/)?tidepool/(operator|gateway|engine-sim):' | grep -v ":$tag\$" \
  | xargs -r -n1 podman rmi >/dev/null 2>&1 || true
step "images ready ($(elapsed))"
