# Stand-in for redis:7 where no registry is reachable: Debian's redis-server and redis-cli, /data as the work dir.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chmod 1777 /data
WORKDIR /data
CMD ["redis-server"]
