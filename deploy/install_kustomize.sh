#!/usr/bin/env bash
# Builds kustomize from the Go module proxy, cached by version like stack/install/go-components.sh:
#   $SOMA_CACHE/kustomize/<version>/kustomize     (SOMA_CACHE default ~/.cache/somaagent-stack)
# Prints the binary's path on stdout. Cold build: ~1-3 min on 2 cores; cached: instant.
set -euo pipefail
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-5.7.1}"   # sigs.k8s.io/kustomize/kustomize/v5
SOMA_CACHE="${SOMA_CACHE:-$HOME/.cache/somaagent-stack}"
out="$SOMA_CACHE/kustomize/$KUSTOMIZE_VERSION"
if [ -x "$out/kustomize" ]; then echo "$out/kustomize"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "install_kustomize: 'go' is not on PATH" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
work="$out.tmp"; rm -rf "$work"; mkdir -p "$work"
(cd "$work" && go mod init soma-build/kustomize >/dev/null 2>&1 \
  && go get -tool "sigs.k8s.io/kustomize/kustomize/v5@v$KUSTOMIZE_VERSION" >&2 \
  && go build -trimpath -ldflags="-s -w" -o kustomize sigs.k8s.io/kustomize/kustomize/v5 >&2)
rm -rf "$out"; mv "$work" "$out"
echo "$out/kustomize"
