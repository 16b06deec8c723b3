#!/bin/bash
# KAFKA_* environment -> server.properties, format the storage once (KRaft), run the broker + controller.
set -euo pipefail
props=/opt/kafka/config/server.properties
: >"$props"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_PERFORMANCE_OPTS) continue ;;
    KAFKA_*) key="${name#KAFKA_}"; key="${key,,}"; echo "${key//_/.}=${value}" >>"$props" ;;
  esac
done < <(env)
logdir="$(sed -n 's/^log\.dirs=//p' "$props")"
if [ ! -f "${logdir:-/var/lib/kafka/data}/meta.properties" ]; then
  java -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format -t "${CLUSTER_ID:?CLUSTER_ID is required}" \
    -c "$props" --ignore-formatted
fi
exec java ${KAFKA_HEAP_OPTS:--Xmx256m -Xms256m} -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
