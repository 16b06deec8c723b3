"""Prometheus metrics of the translator, read from its counters at scrape time.

The share path only bumps plain integers (see :class:`~ckbpool.proxy.downstream.V1Server`); this collector turns
them into metric families when Prometheus asks, so metrics cost nothing per share. Labels stay low-cardinality:
``service`` (``v1`` for the ASIC port, ``getwork`` for ``ckb miner``), a ``result`` from a fixed set and a
refusal ``reason`` from :class:`~.limits.Refusal` — never a worker name or an address (per-worker numbers are in
``/status``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..v1.errors import StratumErrorCode

if TYPE_CHECKING:
    from .service import Proxy

__all__ = ["UPSTREAM_STATES", "ProxyCollector", "result_label"]

#: the V1 side's upstream states (:class:`~ckbpool.proxy.downstream.V1Server`), each always exported
UPSTREAM_STATES = ("serving", "grace", "refusing")

#: share results a getwork rejection can map to (SV2 SubmitShares.Error codes and the proxy's own)
GETWORK_RESULTS = frozenset(
    {"stale_work", "stale_share", "difficulty_too_low", "duplicate_share", "invalid_job_id", "invalid_channel_id"}
)


def result_label(reason: int | str) -> str:
    """The ``result`` label of a rejected share: V1 codes by name (``job_not_found``...), SV2/getwork error codes
    in snake case; anything else is ``other`` so a misbehaving peer cannot mint label values."""
    if isinstance(reason, int):
        try:
            return StratumErrorCode(reason).name.lower()
        except ValueError:
            return "other"
    label = reason.replace("-", "_").lower()
    return label if label in GETWORK_RESULTS else "other"


def _add_shares(
    family: CounterMetricFamily, service: str, accepted: int, rejected: Mapping[int, int] | Mapping[str, int]
) -> None:
    family.add_metric([service, "accepted"], float(accepted))
    by_result: dict[str, int] = {}
    for reason, count in rejected.items():
        label = result_label(reason)
        by_result[label] = by_result.get(label, 0) + count
    for label, count in sorted(by_result.items()):
        family.add_metric([service, label], float(count))


class ProxyCollector(Collector):
    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def collect(self) -> Iterator[Metric]:
        v1, getwork = self._proxy.v1, self._proxy.getwork
        up = GaugeMetricFamily(
            "ckbpool_proxy_upstream_up", "1 while the SV2 channel to the pool is open", labels=["service"]
        )
        connects = CounterMetricFamily(
            "ckbpool_proxy_upstream_connects", "Connections made to the pool (1 + reconnects)", labels=["service"]
        )
        shares = CounterMetricFamily(
            "ckbpool_proxy_shares", "Shares from downstream miners, by result", labels=["service", "result"]
        )
        blocks = CounterMetricFamily(
            "ckbpool_proxy_blocks", "Block candidates forwarded to the pool", labels=["service"]
        )
        for service, server in (("v1", v1), ("getwork", getwork)):
            if server is None:
                continue
            up.add_metric([service], 1.0 if server.upstream.connected else 0.0)
            connects.add_metric([service], float(server.upstream.connections))
        if v1 is not None:
            _add_shares(shares, "v1", v1.accepted, v1.rejected)
            blocks.add_metric(["v1"], float(v1.blocks))
        if getwork is not None:
            _add_shares(shares, "getwork", getwork.accepted, getwork.rejected)
            blocks.add_metric(["getwork"], float(getwork.submitted))
        yield up
        yield connects
        yield shares
        yield blocks
        if v1 is not None:
            yield GaugeMetricFamily("ckbpool_proxy_miners", "V1 miners connected", value=len(v1.connections))
            yield GaugeMetricFamily(
                "ckbpool_proxy_pending_shares",
                "Shares forwarded and awaiting the pool's verdict",
                value=len(v1.pending),
            )
            yield CounterMetricFamily(
                "ckbpool_proxy_verdicts_lost",
                "Forwarded shares the pool never answered (miners were told stale)",
                value=float(v1.verdicts_lost),
            )
            refusals = CounterMetricFamily(
                "ckbpool_proxy_v1_refusals",
                "V1 connections refused at accept or closed by an abuse limit, by reason",
                labels=["reason"],
            )
            for reason, count in v1.refusals.items():
                refusals.add_metric([reason.value], float(count))
            yield refusals
            state = GaugeMetricFamily(
                "ckbpool_proxy_v1_upstream_state",
                "1 for the V1 side's current upstream state: serving (a pool channel with a job), grace (the pool "
                "is away, miners held for v1.upstream_loss_grace_s) or refusing (miners closed, accepts refused)",
                labels=["state"],
            )
            for name in UPSTREAM_STATES:
                state.add_metric([name], 1.0 if v1.upstream_state == name else 0.0)
            yield state
            yield CounterMetricFamily(
                "ckbpool_proxy_v1_upstream_losses",
                "Times the V1 side's pool channel was lost after it had served a job",
                value=float(v1.upstream_losses),
            )
            yield CounterMetricFamily(
                "ckbpool_proxy_v1_closed_for_upstream_loss",
                "V1 connections closed because the pool stayed away past v1.upstream_loss_grace_s",
                value=float(v1.closed_for_upstream_loss),
            )
            yield GaugeMetricFamily(
                "ckbpool_proxy_v1_miner_ids_free",
                "Miner ids (extranonce1) a new V1 subscription can still get",
                value=float(v1.ids.available),
            )
            traffic = CounterMetricFamily(
                "ckbpool_proxy_traffic_bytes",
                "Bytes on the V1 side (downstream) and the SV2 side (upstream)",
                labels=["side", "direction"],
            )
            traffic.add_metric(["downstream", "in"], float(v1.bytes_in))
            traffic.add_metric(["downstream", "out"], float(v1.bytes_out))
            traffic.add_metric(["upstream", "in"], float(v1.upstream.bytes_in))
            traffic.add_metric(["upstream", "out"], float(v1.upstream.bytes_out))
            yield traffic
