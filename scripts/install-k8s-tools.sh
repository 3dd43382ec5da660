#!/usr/bin/env bash
# Installs the Kubernetes tooling the deploy tests need (kustomize) into .local/bin, from the Go module proxy.
# Idempotent: does nothing when the pinned version is already there. Needs Go (>= 1.24; v5.8+ needs 1.27).
# Usage: scripts/install-k8s-tools.sh   (then put .local/bin on PATH, or let the tests find it there)
set -euo pipefail
cd "$(dirname "$0")/.."

KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"
BIN="$(pwd)/.local/bin"
mkdir -p "$BIN"

if [ -x "$BIN/kustomize" ] && "$BIN/kustomize" version 2>/dev/null | grep -q "${KUSTOMIZE_VERSION}"; then
  echo "kustomize ${KUSTOMIZE_VERSION} already in $BIN"
  exit 0
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-k8s-tools: Go is required to build kustomize (apt-get install golang-go, or put go on PATH)" >&2
  exit 1
fi
# The build cache lives under .local so a CI run doesn't depend on a warm $HOME.
export GOBIN="$BIN"
export GOFLAGS="-mod=mod"
export GOPATH="${GOPATH:-$(pwd)/.local/go}"
export GOCACHE="${GOCACHE:-$(pwd)/.local/go-build}"
export CGO_ENABLED=0
go install "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
"$BIN/kustomize" version
