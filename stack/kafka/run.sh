#!/usr/bin/env bash
# Supervisor's command for Kafka: formats the KRaft storage on first start (when
# DATA_DIR/meta.properties is missing), then runs the node with the JMX exporter agent.
#
#   run.sh KAFKA_HOME DATA_DIR
#     the default profile's single node: server.properties, broker 127.0.0.1:9092, controller
#     19093, JMX exporter 9404, a random cluster id, heap 768 MiB.
#   run.sh KAFKA_HOME DATA_DIR NODE BROKER_PORTS CONTROLLER_PORTS JMX_PORTS
#     node NODE (1, 2 or 3) of a three-node cluster (cluster.properties, every node broker and
#     controller): each *_PORTS is a comma-separated list of the three nodes' ports of
#     127.0.0.1 and the node takes the NODE-th of each (the scale profile: 9092,29092,39092
#     19093,29093,39093 9404,9405,9406). All nodes of a cluster format with the same cluster
#     id, derived from CONTROLLER_PORTS; heap 512 MiB (three JVMs on one machine).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -eq 2 ]; then
  home=$1 data=$2
  mkdir -p "$data"
  sed "s|@DATA_DIR@|$data|" "$here/server.properties" > "$data.properties"
  heap=(-Xms256m -Xmx768m) jmx=9404 cluster_id=""
elif [ $# -eq 6 ]; then
  home=$1 data=$2 node=$3
  IFS=, read -r -a brokers <<< "$4"
  IFS=, read -r -a controllers <<< "$5"
  IFS=, read -r -a jmxs <<< "$6"
  if [[ ! "$node" =~ ^[123]$ ]] || [ ${#brokers[@]} -ne 3 ] || [ ${#controllers[@]} -ne 3 ] \
      || [ ${#jmxs[@]} -ne 3 ]; then
    echo "run.sh: NODE must be 1, 2 or 3 and each *_PORTS three comma-separated ports" >&2
    exit 2
  fi
  voters="1@127.0.0.1:${controllers[0]},2@127.0.0.1:${controllers[1]},3@127.0.0.1:${controllers[2]}"
  mkdir -p "$data"
  sed -e "s|@DATA_DIR@|$data|" -e "s|@NODE_ID@|$node|" -e "s|@VOTERS@|$voters|" \
    -e "s|@BROKER_PORT@|${brokers[node-1]}|" -e "s|@CONTROLLER_PORT@|${controllers[node-1]}|" \
    "$here/cluster.properties" > "$data.properties"
  heap=(-Xms256m -Xmx512m) jmx=${jmxs[node-1]}
  # A Kafka cluster id is 16 bytes in URL-safe base64 without padding: here the MD5 of the
  # voters, the same on every node of this cluster and different for clusters on other ports.
  cluster_id=$(printf 'soma-kafka %s' "$voters" | md5sum | cut -c1-32 | xxd -r -p | base64 \
    | tr '+/' '-_' | tr -d '=')
else
  echo "usage: run.sh KAFKA_HOME DATA_DIR [NODE BROKER_PORTS CONTROLLER_PORTS JMX_PORTS]" >&2
  exit 2
fi
export KAFKA_HEAP_OPTS="${heap[*]}"
cp=("$home/lib/*")
if [ ! -f "$data/meta.properties" ]; then
  java -cp "${cp[*]}" -Dlog4j2.configurationFile="$here/log4j2.yaml" \
    kafka.tools.StorageTool format \
    -t "${cluster_id:-$(java -cp "${cp[*]}" kafka.tools.StorageTool random-uuid)}" \
    -c "$data.properties" --ignore-formatted
fi
exec java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$here/log4j2.yaml" \
  -javaagent:"$home/jmx_prometheus_javaagent.jar=127.0.0.1:$jmx:$here/jmx-exporter.yaml" \
  -cp "${cp[*]}" kafka.Kafka "$data.properties"
