#!/usr/bin/env bash
# Supervisor's command for Kafka: formats the KRaft storage on first start, then runs the
# broker with the JMX exporter agent. Usage: run.sh KAFKA_HOME DATA_DIR
set -euo pipefail
home=$1 data=$2
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$data"
sed "s|@DATA_DIR@|$data|" "$here/server.properties" > "$data.properties"
export KAFKA_HEAP_OPTS="-Xms256m -Xmx768m"
cp=("$home/lib/*")
if [ ! -f "$data/meta.properties" ]; then
  java -cp "${cp[*]}" -Dlog4j2.configurationFile="$here/log4j2.yaml" \
    kafka.tools.StorageTool format -t "$(java -cp "${cp[*]}" kafka.tools.StorageTool random-uuid)" \
    -c "$data.properties" --ignore-formatted
fi
exec java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$here/log4j2.yaml" \
  -javaagent:"$home/jmx_prometheus_javaagent.jar=127.0.0.1:9404:$here/jmx-exporter.yaml" \
  -cp "${cp[*]}" kafka.Kafka "$data.properties"
