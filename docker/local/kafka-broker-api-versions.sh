#!/bin/bash
# Stand-in for /opt/kafka/bin/kafka-broker-api-versions.sh of the apache/kafka image: the same tool class
# (org.apache.kafka.tools.BrokerApiVersionsCommand, from the kafka-tools jar) run the same way, so the compose
# healthcheck asks the broker for its API versions here exactly as it does on the official image.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
