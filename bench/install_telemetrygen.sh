#!/usr/bin/env bash
# Builds telemetrygen (the collector-contrib OTLP load generator) from the Go module proxy and
# caches it under $SOMA_CACHE/telemetrygen/<version>/telemetrygen; prints the binary's path.
# Usage: bench/install_telemetrygen.sh [VERSION]   (default: the stack's OTELCOL_VERSION)
# Cold build: a few minutes on 2 cores (module download + compile); warm: instant.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../stack/versions.env
source "$HERE/../stack/versions.env"
VERSION="${1:-$OTELCOL_VERSION}"
SOMA_CACHE="${SOMA_CACHE:-$HOME/.cache/somaagent-stack}"
PKG=github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen
OUT="$SOMA_CACHE/telemetrygen/$VERSION"
if [ -x "$OUT/telemetrygen" ]; then echo "$OUT/telemetrygen"; exit 0; fi
command -v go >/dev/null || { echo "install_telemetrygen: Go toolchain missing" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
WORK="$OUT.tmp"; rm -rf "$WORK"; mkdir -p "$WORK"
# telemetrygen is its own module: build it inside a throwaway module so its go.mod's
# requirements are honoured (same pattern as stack/install/go-components.sh).
(cd "$WORK" && go mod init soma-build/telemetrygen >/dev/null 2>&1 \
  && go get -tool "$PKG@v$VERSION" >&2 \
  && nice -n 10 go build -p 1 -trimpath -ldflags="-s -w" -o telemetrygen "$PKG" >&2)
rm -rf "$OUT"; mv "$WORK" "$OUT"
echo "$OUT/telemetrygen"
