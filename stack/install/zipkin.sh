#!/usr/bin/env bash
# Fetches the Zipkin server (io.zipkin:zipkin-server, the "exec" classifier: one runnable jar
# that carries the Lens UI) from Maven Central into $SOMA_CACHE/zipkin/<version>/zipkin.jar.
# The stack runs it on Java 17 with in-memory storage as the person-facing trace UI; the
# collector's zipkin exporter feeds it the tail-sampled traces (docs/trace-ui.md).
COMPONENT=zipkin
source "$(dirname "$0")/common.sh"
require java "Java 17 runtime"
require mvn "Maven 3"
java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])' || die "Zipkin $ZIPKIN_VERSION needs Java 17 or newer: $(java -version 2>&1 | head -1)"
out="$SOMA_CACHE/zipkin/$ZIPKIN_VERSION"
[ -f "$out/.complete" ] && { log "cached: $out/zipkin.jar"; exit 0; }
rm -rf "$out"; mkdir -p "$out"
log "fetching io.zipkin:zipkin-server:$ZIPKIN_VERSION:exec"
mvn -q -B dependency:copy -Dartifact="io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" \
  -DoutputDirectory="$out" -Dmdep.stripVersion=true -Dmdep.stripClassifier=true
[ -f "$out/zipkin-server.jar" ] || die "the exec jar did not arrive in $out"
mv "$out/zipkin-server.jar" "$out/zipkin.jar"
touch "$out/.complete"
log "ready: $out/zipkin.jar"
