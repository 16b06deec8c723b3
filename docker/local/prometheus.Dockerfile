# Stand-in for prom/prometheus where no registry is reachable: Debian's prometheus, same entrypoint contract
# (arguments only in `command:`), user nobody, /prometheus for the TSDB, wget for the healthcheck.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
