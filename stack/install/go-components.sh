#!/usr/bin/env bash
# Builds the Go components, each cached under $SOMA_CACHE by version:
#   otelcol-soma  OpenTelemetry Collector Builder (OCB) from collector-config/builder-config.yaml
#   jaeger        Jaeger v2 (github.com/jaegertracing/jaeger/cmd/jaeger)
#   victoria-logs VictoriaLogs (github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs)
#   victoria-metrics VictoriaMetrics single-node (github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics)
# Usage: go-components.sh [collector|jaeger|victorialogs|victoriametrics]...   (default: all four)
COMPONENT=go
source "$(dirname "$0")/common.sh"
require go "Go 1.26 toolchain"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

build_collector() {
  local manifest="$REPO_DIR/collector-config/builder-config.yaml"
  local key; key=$(sha256sum "$manifest" | cut -c1-12)
  local out="$SOMA_CACHE/otelcol/$OTELCOL_VERSION-$key"
  [ -x "$out/otelcol-soma" ] && { log "collector cached: $out/otelcol-soma"; return; }
  COMPONENT=collector log "building with OCB v$OTELCOL_VERSION (cold: ~10 min on 2 cores)"
  local gobin="$SOMA_CACHE/gobin/builder-$OTELCOL_VERSION"
  [ -x "$gobin/builder" ] || GOBIN="$gobin" go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
  mkdir -p "$out.tmp"
  sed "s|@OUTPUT_PATH@|$out.tmp|" "$manifest" > "$out.tmp/manifest.yaml"
  "$gobin/builder" --config "$out.tmp/manifest.yaml"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# build_tool NAME MODULE PACKAGE VERSION: builds PACKAGE from MODULE@VERSION inside a
# throwaway module (go get -tool), which also honours the module's own requirements.
build_tool() {
  local name=$1 module=$2 package=$3 version=$4
  local out="$SOMA_CACHE/$name/$version"
  [ -x "$out/$name" ] && { log "$name cached: $out/$name"; return; }
  COMPONENT=$name log "building $package@v$version"
  local work="$out.tmp"; rm -rf "$work"; mkdir -p "$work"
  (cd "$work" && go mod init "soma-build/$name" >/dev/null 2>&1 \
    && go get -tool "$package@v$version" && go build -trimpath -ldflags="-s -w" -o "$name" "$package")
  rm -rf "$out"; mv "$work" "$out"
}

targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(collector jaeger victorialogs victoriametrics)
for t in "${targets[@]}"; do
  case $t in
    collector) build_collector ;;
    jaeger) build_tool jaeger github.com/jaegertracing/jaeger github.com/jaegertracing/jaeger/cmd/jaeger "$JAEGER_MODULE_VERSION" ;;
    victorialogs) build_tool victoria-logs github.com/VictoriaMetrics/VictoriaLogs github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs "$VICTORIALOGS_VERSION" ;;
    victoriametrics) build_tool victoria-metrics github.com/VictoriaMetrics/VictoriaMetrics github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics "$VICTORIAMETRICS_VERSION" ;;
    *) die "unknown Go component '$t'" ;;
  esac
done
