# Stand-in for apache/kafka:4.x where no registry is reachable: the broker jars `make deps` fetched from Maven
# Central on Debian's JRE, with the official image's interface: KAFKA_* environment variables become
# server.properties (KAFKA_ removed, _ -> .), CLUSTER_ID formats the storage once, user appuser (uid 1000) owns
# /var/lib/kafka/data, and /opt/kafka/bin/kafka-broker-api-versions.sh answers the healthcheck (here: the
# broker port accepts connections; the official script asks the broker for its API versions).
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd -g 1000 appuser && useradd -u 1000 -g appuser -d /opt/kafka -s /bin/bash appuser \
    && mkdir -p /opt/kafka/bin /opt/kafka/config /var/lib/kafka/data \
    && chown -R appuser:appuser /opt/kafka/config /var/lib/kafka
COPY libs /opt/kafka/libs
COPY kafka-run.sh /opt/kafka/bin/run
COPY kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh
RUN chmod 755 /opt/kafka/bin/run /opt/kafka/bin/kafka-broker-api-versions.sh
USER appuser
EXPOSE 9092 9093
ENTRYPOINT ["/opt/kafka/bin/run"]
