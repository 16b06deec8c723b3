# A test host that behaves like a Debian 12 server for the btcpool role's multi-host scenario: systemd as PID 1
# (ssh, docker and the role's firewall unit are real units), its own network namespace and address, its own
# Docker engine (Debian's docker.io, installed but not enabled: the role starts and enables it), nftables.
# Run with the capabilities of a nested engine (tests/e2e/test_ansible_multihost.py: all capabilities this
# machine grants, no seccomp/AppArmor profile, the cgroup hierarchy writable) and /var/lib/docker on a volume.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus python3 openssh-server iproute2 \
        nftables iptables curl ca-certificates docker.io docker-compose \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /root/.ssh && chmod 700 /root/.ssh \
    && systemctl enable ssh \
    && systemctl disable docker.service docker.socket \
    && systemctl mask getty@tty1.service systemd-logind.service
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
