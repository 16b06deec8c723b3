# Stand-in for redis:7.4.2 where no registry is reachable.
# upstream: redis:7.4.2 -- https://github.com/docker-library/redis/tree/8338d86bc3f7b195046138f8c31bf9a839cdedd3/7.4/debian
#   (Dockerfile, docker-entrypoint.sh; the commit library/redis names for 7.4.2); contract: docker/local/README.md
# Kept: user and group redis 999 (made before the package can pick another id); redis-server and redis-cli on PATH
#   (also as /usr/local/bin/*, where the official image has them); /data the work dir and volume, owned by redis;
#   no configuration of its own (an empty /etc/redis, as a bind mount of /etc/redis/redis.conf leaves it);
#   CMD redis-server; sh, cat and grep (the compose healthcheck); port 6379.
# Differs: Debian's redis 7.0 packages instead of 7.4.2 built from source; no docker-entrypoint.sh (its drop from
#   root to redis with gosu): the compose file replaces the entrypoint with redis-server and sets the user, and
#   tests/unit/test_image_contracts.py fails if it stops doing so.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN groupadd -r -g 999 redis && useradd -r -g redis -u 999 redis \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/redis-server /usr/local/bin/redis-server && ln -s /usr/bin/redis-cli /usr/local/bin/redis-cli \
    && rm -rf /etc/redis && mkdir -m 0755 /etc/redis \
    && mkdir -p /data && chown redis:redis /data
VOLUME /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
