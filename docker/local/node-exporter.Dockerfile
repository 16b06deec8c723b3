# Stand-in for prom/node-exporter:v1.8.2 where no registry is reachable.
# upstream: prom/node-exporter:v1.8.2 -- https://github.com/prometheus/node_exporter/blob/v1.8.2/Dockerfile;
#   contract: docker/local/README.md
# Kept: ENTRYPOINT /bin/node_exporter (arguments only in `command:`); user nobody (65534); wget (the compose
#   healthcheck; busybox's in the official image); port 9100.
# Differs: Debian's prometheus-node-exporter 1.5 on bookworm instead of the v1.8.2 release binary on busybox.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus-node-exporter wget \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/prometheus-node-exporter /usr/bin/node_exporter && test -x /bin/node_exporter
USER nobody
EXPOSE 9100
ENTRYPOINT ["/bin/node_exporter"]
