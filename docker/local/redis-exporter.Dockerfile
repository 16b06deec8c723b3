# Stand-in for oliver006/redis_exporter where no registry is reachable: Debian's prometheus-redis-exporter.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus-redis-exporter wget \
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/usr/bin/prometheus-redis-exporter"]
