# Stand-in for prometheuscommunity/postgres-exporter:v0.15.0 where no registry is reachable.
# upstream: prometheuscommunity/postgres-exporter:v0.15.0 -- https://github.com/prometheus-community/postgres_exporter/blob/v0.15.0/Dockerfile
#   contract: docker/local/README.md
# Kept: ENTRYPOINT /bin/postgres_exporter, configured by DATA_SOURCE_URI / DATA_SOURCE_USER /
#   DATA_SOURCE_PASS_FILE (or DATA_SOURCE_NAME); USER nobody; wget (the compose healthcheck; busybox's upstream);
#   port 9187; pg_up and pg_database_size_bytes among its metrics.
# Differs: Debian's prometheus-postgres-exporter 0.11.1 on bookworm instead of the v0.15.0 binary on busybox.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus-postgres-exporter wget \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/prometheus-postgres-exporter /bin/postgres_exporter
USER nobody
EXPOSE 9187
ENTRYPOINT ["/bin/postgres_exporter"]
