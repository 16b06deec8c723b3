#!/bin/bash
# Stand-in for /etc/kafka/docker/run, the command of the apache/kafka image (upstream: docker/resources/
# common-scripts/{run,configureDefaults,configure}, docker/jvm/launch and kafka.docker.KafkaDockerWrapper):
#   - CLUSTER_ID defaults to the image's fixed one when unset
#   - KAFKA_LISTENERS, when unset, is KAFKA_ADVERTISED_LISTENERS with every host 0.0.0.0 (not on a controller-only node)
#   - every other KAFKA_* variable is a server property: KAFKA_ removed, lower case, '_' -> '.', '__' -> '_',
#     '___' -> '-'; the JVM/logging variables upstream keeps out of server.properties are kept out here too
#   - /mnt/shared/config/server.properties, when mounted, comes first and the variables are appended to it
#   - the result is /opt/kafka/config/server.properties; the storage is formatted with CLUSTER_ID if it is not yet
#   - the broker starts as kafka-server-start.sh starts it: KAFKA_HEAP_OPTS defaults to -Xmx1G -Xms1G
# Not reproduced (ckbpool uses none of it): the SSL/SASL/JMX variables' checks, the log4j variables, the
# default single-node server.properties used when no KAFKA_* variable and no mounted file is given.
set -euo pipefail

export CLUSTER_ID="${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}"
if [ -z "${KAFKA_LISTENERS-}" ] && [ "${KAFKA_PROCESS_ROLES-}" != "controller" ] && [ -n "${KAFKA_ADVERTISED_LISTENERS-}" ]; then
  listeners=()
  IFS=',' read -ra advertised <<<"$KAFKA_ADVERTISED_LISTENERS"
  for l in "${advertised[@]}"; do listeners+=("${l%%://*}://0.0.0.0:${l##*:}"); done
  KAFKA_LISTENERS="$(IFS=','; echo "${listeners[*]}")"
  export KAFKA_LISTENERS
fi

not_properties=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS KAFKA_JVM_PERFORMANCE_OPTS \
KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS KAFKA_TOOLS_LOG4J_LOGLEVEL KAFKA_JMX_HOSTNAME "
props=/opt/kafka/config/server.properties
[ -w /opt/kafka/config ] || { echo "/opt/kafka/config is not writable" >&2; exit 1; }
if [ -f /mnt/shared/config/server.properties ]; then cp /mnt/shared/config/server.properties "$props"; else : >"$props"; fi
while IFS= read -r name; do
  case "$not_properties" in *" $name "*) continue ;; esac
  key="${name#KAFKA_}"; key="${key,,}"; key="${key//_/.}"; key="${key//.../-}"; key="${key//../_}"
  printf '%s=%s\n' "$key" "${!name}" >>"$props"
done < <(compgen -e | grep '^KAFKA_' | sort)
[ -s "$props" ] || { echo "no KAFKA_* settings and no /mnt/shared/config/server.properties" >&2; exit 1; }

logdir="$(sed -n 's/^log\.dirs=//p' "$props" | tail -n1)"
if [ ! -f "${logdir:-/var/lib/kafka/data}/meta.properties" ]; then
  /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool format --cluster-id="$CLUSTER_ID" -c "$props" --ignore-formatted
fi
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$props"
