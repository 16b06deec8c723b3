# Stand-in for apache/kafka:4.4.0 where no registry is reachable.
# upstream: apache/kafka:4.4.0 -- https://github.com/apache/kafka/tree/4.4.0/docker (jvm/Dockerfile, jvm/launch,
#   resources/common-scripts/*, core/src/main/scala/kafka/docker/KafkaDockerWrapper.scala); contract: docker/local/README.md
# Kept: CMD /etc/kafka/docker/run; user appuser uid 1000 (group appuser 1000, home /home/appuser); the
#   distribution in /opt/kafka (bin/, libs/, config/) owned by appuser; /var/lib/kafka/data, /etc/kafka/secrets
#   and /mnt/shared/config as volumes (data owned appuser:root, group-writable); KAFKA_* variables -> server.properties,
#   CLUSTER_ID, KAFKA_HEAP_OPTS (broker default -Xmx1G -Xms1G, tools -Xmx256M); the healthcheck tool
#   /opt/kafka/bin/kafka-broker-api-versions.sh (the real BrokerApiVersionsCommand); bash; port 9092.
# Differs: Debian's OpenJDK 17 instead of Temurin 21 on Alpine (Kafka 4.x brokers need Java 17+); the jars
#   scripts/kafka-deps.sh fetched from Maven Central (deps/kafka/pom.xml, same version) instead of the release
#   tarball; slf4j-simple logging to stderr; no CDS archives; only the bin/ scripts ckbpool uses.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd -g 1000 appuser && useradd -m -d /home/appuser -u 1000 -g appuser -s /bin/bash appuser \
    && mkdir -p /opt/kafka/bin /opt/kafka/config /var/lib/kafka/data /etc/kafka/secrets /etc/kafka/docker \
       /mnt/shared/config /usr/logs \
    && chown -R appuser:appuser /opt/kafka /mnt/shared/config /usr/logs \
    && chown -R appuser:root /var/lib/kafka /etc/kafka \
    && chmod -R ug+w /var/lib/kafka /etc/kafka
COPY libs /opt/kafka/libs
COPY kafka-run.sh /etc/kafka/docker/run
COPY kafka-run-class.sh /opt/kafka/bin/kafka-run-class.sh
COPY kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh
RUN chmod 755 /etc/kafka/docker/run /opt/kafka/bin/kafka-run-class.sh /opt/kafka/bin/kafka-broker-api-versions.sh \
    && chown -R appuser:appuser /opt/kafka && chown appuser:appuser /etc/kafka/docker/run
USER appuser
EXPOSE 9092
VOLUME ["/etc/kafka/secrets", "/var/lib/kafka/data", "/mnt/shared/config"]
CMD ["/etc/kafka/docker/run"]
