# Stand-in for nervos/ckb:v0.210.0 where no registry is reachable: the same interface (ckb on PATH as /bin/ckb,
# user ckb uid 1000, /var/lib/ckb owned by it, bash for the healthcheck), with the ckb binary `make deps` built.
ARG BASE=local/debian:bookworm
FROM ${BASE}
RUN groupadd -g 1000 ckb && useradd -u 1000 -g ckb -d /var/lib/ckb -s /bin/bash ckb \
    && mkdir -p /var/lib/ckb && chown ckb:ckb /var/lib/ckb
COPY ckb /bin/ckb
RUN /bin/ckb --version
USER ckb
WORKDIR /var/lib/ckb
ENTRYPOINT ["/bin/ckb"]
