# Stand-in for oliver006/redis_exporter:v1.66.0-alpine where no registry is reachable.
# upstream: oliver006/redis_exporter:v1.66.0-alpine -- https://github.com/oliver006/redis_exporter/blob/v1.66.0/Dockerfile
#   (its `alpine` stage); contract: docker/local/README.md
# Kept: ENTRYPOINT /redis_exporter (configured by REDIS_* variables or arguments); USER 59000:59000; wget (the
#   compose healthcheck; busybox's in the Alpine image); port 9121.
# Differs: Debian's prometheus-redis-exporter 1.45 on bookworm instead of the v1.66.0 static binary on Alpine 3.20.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus-redis-exporter wget \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/prometheus-redis-exporter /redis_exporter
USER 59000:59000
EXPOSE 9121
ENTRYPOINT ["/redis_exporter"]
