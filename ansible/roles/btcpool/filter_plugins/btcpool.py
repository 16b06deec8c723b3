"""Filters of the btcpool role's preflight: which mount holds a path, which published ports are taken."""

from __future__ import annotations

import re


def btcpool_mount_for(mounts, paths):
    """The mounts (ansible_facts.mounts) holding each of ``paths``: the longest mount point that is a prefix."""
    found = []
    for path in paths:
        path = str(path).rstrip("/") or "/"
        best = None
        for mount in mounts or []:
            point = str(mount.get("mount", ""))
            inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) > len(str(best["mount"]))):
                best = mount
        if best is not None and best not in found:
            found.append(best)
    return found


def btcpool_taken_ports(published, ss_lines, own_ports=""):
    """Published ports ({address, port, service}) that a listener other than this pool's containers holds.

    ``ss_lines``: ``ss -Hltn`` output lines; ``own_ports``: ``docker ps --format {{.Ports}}`` of the pool's
    compose project (``127.0.0.1:8114->8114/tcp, ...``): those are the pool's own, on a second run.
    """
    listening = []
    for line in ss_lines or []:
        fields = str(line).split()
        if len(fields) >= 4:
            address, _, port = fields[3].rpartition(":")
            listening.append((address.strip("[]"), port))
    own = {m.group(1) for m in re.finditer(r":(\d+)->", str(own_ports or ""))}
    taken = []
    for pub in published or []:
        port = str(pub["port"])
        if port in own:
            continue
        wanted = {str(pub["address"]), "0.0.0.0", "*", "::", "::ffff:" + str(pub["address"])}
        if str(pub["address"]) in ("0.0.0.0", "::"):
            hit = any(p == port for _, p in listening)
        else:
            hit = any(p == port and a in wanted for a, p in listening)
        if hit and pub not in taken:
            taken.append(pub)
    return taken


class FilterModule:
    def filters(self):
        return {"btcpool_mount_for": btcpool_mount_for, "btcpool_taken_ports": btcpool_taken_ports}
