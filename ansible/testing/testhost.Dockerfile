# A test host for the btcpool role's e2e scenario: Debian 12 from the local debootstrap base, reached over SSH.
# It carries the docker and docker-compose clients only: the scenario bind-mounts the machine's Docker socket
# (the role's "engine already present" path, btcpool_docker_install: false), because Docker-in-Docker inside a
# test container is not what we want to test on a 2-core machine.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3 openssh-server iproute2 docker.io docker-compose \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
CMD ["/usr/sbin/sshd", "-D", "-e"]
