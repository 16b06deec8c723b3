# The pod sandbox image for the one-node test cluster (tests/support/k8s.py): containerd's CRI `sandbox_image`
# points at it, in place of registry.k8s.io/pause (no registry is reachable here). Only the static binary
# compiled from pause.c; nothing else runs in it.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
