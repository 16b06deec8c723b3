# Stand-in for prom/node-exporter where no registry is reachable: Debian's prometheus-node-exporter.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus-node-exporter wget \
    && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["/usr/bin/prometheus-node-exporter"]
