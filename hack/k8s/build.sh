#!/usr/bin/env bash
# Builds roster-k8s (hack/k8s: kube-apiserver, kube-controller-manager and embedded etcd from
# the Kubernetes Go modules) once per machine and prints the binary's path.
#
# The binary is cached by a hash of its inputs (the Go sources, go.mod, go.sum, this script and
# the Go version) under ${ROSTER_K8S_CACHE:-$XDG_CACHE_HOME/roster-k8s}; the Go module and build
# caches are Go's own (outside the clone). A cold build takes minutes on two cores; a warm one
# returns at once. .dev/bin/roster-k8s is linked to the binary built last.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$HERE/../.." && pwd -P)
# The Kubernetes version pinned in go.mod, for /version.
K8S_VERSION=v1.36.3
CACHE=${ROSTER_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roster-k8s}

command -v go >/dev/null || { echo "build.sh: Go is not installed (go.dev; Debian's golang is too old)" >&2; exit 1; }
hash=$(cd "$HERE" && { cat go.mod go.sum build.sh ./*.go; go version; } | sha256sum | cut -c1-16)
bin=$CACHE/$hash/roster-k8s
if [[ ! -x $bin ]]; then
    echo "build.sh: building roster-k8s $K8S_VERSION (minutes, once per machine)" >&2
    mkdir -p "$CACHE/$hash"
    pkg=k8s.io/component-base/version
    ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=36"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
    (cd "$HERE" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$bin.tmp" .)
    mv -f "$bin.tmp" "$bin"
fi
mkdir -p "$REPO_ROOT/.dev/bin"
ln -sfn "$bin" "$REPO_ROOT/.dev/bin/roster-k8s"
echo "$bin"
