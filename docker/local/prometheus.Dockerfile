# Stand-in for prom/prometheus:v2.53.2 where no registry is reachable.
# upstream: prom/prometheus:v2.53.2 -- https://github.com/prometheus/prometheus/blob/v2.53.2/Dockerfile;
#   contract: docker/local/README.md
# Kept: ENTRYPOINT /bin/prometheus (arguments only in `command:`); CMD --config.file=/etc/prometheus/prometheus.yml
#   --storage.tsdb.path=/prometheus; user nobody (65534); /prometheus the work dir and volume and /etc/prometheus,
#   both owned by nobody; wget (the compose healthcheck; busybox's in the official image); port 9090.
# Differs: Debian's prometheus 2.42 on bookworm instead of the v2.53.2 release binary on busybox; no console
#   templates in the default command (the compose file passes its own command).
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus /etc/prometheus && chown -R nobody:nogroup /prometheus /etc/prometheus \
    && test -x /bin/prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
VOLUME ["/prometheus"]
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
