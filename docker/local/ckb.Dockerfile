# Stand-in for nervos/ckb:v0.210.0 where no registry is reachable.
# upstream: nervos/ckb:v0.210.0 -- https://github.com/nervosnetwork/ckb/tree/v0.210.0/docker (hub/Dockerfile,
#   docker-entrypoint.sh); contract: docker/local/README.md
# Kept: user ckb uid 1000 (group ckb 1000, home /home/ckb); /bin/ckb (on PATH); /var/lib/ckb the work dir and
#   volume, owned by ckb, mode 0755; ENV CKB_CHAIN=mainnet; ENTRYPOINT /bin/docker-entrypoint.sh (`run` in a
#   directory without ckb.toml first runs `ckb init --chain $CKB_CHAIN`; then everything is handed to ckb); bash
#   (the compose healthcheck's /dev/tcp); ports 8114 8115.
# Differs: Debian bookworm instead of Ubuntu focal; the ckb binary `make deps` built (same version).
ARG BASE=local/debian:bookworm
FROM ${BASE}
RUN groupadd -g 1000 ckb && useradd -m -u 1000 -g ckb -s /bin/sh ckb \
    && mkdir -p /var/lib/ckb && chown -R ckb:ckb /var/lib/ckb && chmod 755 /var/lib/ckb \
    && printf '%s\n' '#!/bin/sh' \
       '# stand-in for the nervos/ckb image entrypoint: init the chain on the first `run`, then hand over to ckb' \
       'if [ "${1:-}" = "run" ] && [ ! -f ckb.toml ]; then /bin/ckb init --chain "$CKB_CHAIN"; fi' \
       'exec /bin/ckb "$@"' >/bin/docker-entrypoint.sh \
    && chmod 755 /bin/docker-entrypoint.sh
COPY ckb /bin/ckb
RUN /bin/ckb --version
USER ckb
ENV CKB_CHAIN=mainnet
WORKDIR /var/lib/ckb
EXPOSE 8114 8115
VOLUME ["/var/lib/ckb"]
ENTRYPOINT ["/bin/docker-entrypoint.sh"]
