#!/bin/bash
# Stand-in for /opt/kafka/bin/kafka-run-class.sh of the apache/kafka image: java with the environment's JVM
# options over /opt/kafka/libs. The defaults are upstream's: a tool gets -Xmx256M unless KAFKA_HEAP_OPTS is set
# (kafka-server-start.sh sets -Xmx1G -Xms1G before calling it for the broker), and G1 unless
# KAFKA_JVM_PERFORMANCE_OPTS is set. Usage: kafka-run-class.sh <main class> [args...]
set -euo pipefail
main="${1:?usage: kafka-run-class.sh <main class> [args...]}"
shift
heap="${KAFKA_HEAP_OPTS:--Xmx256M}"
perf="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
# word splitting of the option strings is intended, as in the upstream script
# shellcheck disable=SC2086
exec java $heap $perf ${KAFKA_OPTS-} -cp '/opt/kafka/libs/*' "$main" "$@"
