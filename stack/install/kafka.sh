#!/usr/bin/env bash
# Fetches the Kafka broker (KRaft) jars and the Prometheus JMX exporter agent from Maven
# Central into $SOMA_CACHE/kafka/<version>/ (lib/ is the broker classpath).
COMPONENT=kafka
source "$(dirname "$0")/common.sh"
require java "Java 17 runtime"
require mvn "Maven 3"
java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])' || die "Kafka $KAFKA_VERSION needs Java 17 or newer: $(java -version 2>&1 | head -1)"
key=$(sha256sum "$STACK_DIR/kafka/pom.xml" | cut -c1-8)
out="$SOMA_CACHE/kafka/$KAFKA_VERSION-jmx$JMX_EXPORTER_VERSION-$key"
[ -f "$out/.complete" ] && { log "cached: $out"; exit 0; }
rm -rf "$out"; mkdir -p "$out/lib"
log "resolving kafka_2.13:$KAFKA_VERSION and its dependencies"
mvn -q -B -f "$STACK_DIR/kafka/pom.xml" dependency:copy-dependencies \
  -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$LOG4J_VERSION" -Dslf4j.version="$SLF4J_VERSION" \
  -DincludeScope=runtime -DoutputDirectory="$out/lib"
mvn -q -B dependency:copy -Dartifact="io.prometheus.jmx:jmx_prometheus_javaagent:$JMX_EXPORTER_VERSION" \
  -DoutputDirectory="$out" -Dmdep.stripVersion=true
touch "$out/.complete"
log "ready: $out"
