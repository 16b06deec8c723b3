"""What the monitoring tests share: where monitoring/ lives, the metric names PromQL expressions and Grafana
dashboards use, and the short-window copy of the alert rules the live test evaluates."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
RULES = MONITORING / "prometheus" / "rules" / "ckbpool.yml"
RULE_TESTS = MONITORING / "prometheus" / "tests"
PROVISIONING = MONITORING / "grafana" / "provisioning"
DASHBOARD_PROVIDER = PROVISIONING / "dashboards" / "ckbpool.yml"
DASHBOARDS = PROVISIONING / "dashboards" / "ckbpool"
METRIC_NAMES = MONITORING / "metric-names.yml"

# PromQL words that look like metric names but are not
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan", "atan2",
}  # fmt: skip
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_GRAFANA_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, keywords, labels, durations or numbers)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


# Grafana's built-in interval variables -> something PromQL parses; dashboard variables -> match anything
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}


def expand_grafana_vars(expr: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_BUILTINS.get(name, ".*")

    return _GRAFANA_VAR.sub(sub, expr)


def grafana_variables_used(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _GRAFANA_VAR.finditer(expr)} - set(GRAFANA_BUILTINS)


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of a dashboard."""
    out: list[tuple[str, str]] = []
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            out.append((f"panel {panel.get('title')!r} target {target.get('refId')}", target.get("expr", "")))
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query", "")
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
        out.append((f"variable {var['name']!r}", match.group(1) if match else query))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def exporter_metric_names() -> dict[str, dict[str, Any]]:
    """metric-names.yml: exporter -> {version, live, source, metrics}."""
    data: dict[str, dict[str, Any]] = yaml.safe_load(METRIC_NAMES.read_text())
    return data


def pool_metric_names() -> set[str]:
    """Every sample name the pool's /metrics can carry (counters with _total/_created, histogram series)."""
    from ckbpool.pool.metrics import PoolMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
    names = set()
    for family in PoolMetrics().registry.collect():
        # samples alone miss labelled metrics that have no child yet (ckbpool_connection_errors_total{reason})
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def proxy_metric_names() -> set[str]:
    """Every sample name the proxy's /metrics can carry: its collector over a proxy with both services (not started;
    the collector reads counters, which exist from construction)."""
    from ckbpool.proxy import Proxy, load_proxy_config

    config = load_proxy_config(
        data={
            "network": "dev",
            "upstream": {"user_identity": "a.b", "noise": False},
            "getwork": {"enabled": True},
            "http": {"enabled": False},
        }
    )
    names = set()
    for family in Proxy(config).registry.collect():
        names |= {sample.name for sample in family.samples}
        names |= {family.name + "_total"} if family.type == "counter" else {family.name}
    return names


# --------------------------------------------------------------------------------------- short-window rules
# Durations of the real rule file -> what the live test uses with 1 s scrapes. A duration missing here fails
# loudly, so a new window in the rules gets a deliberate test value.
SHORT_DURATIONS = {"1h": "60s", "15m": "20s", "10m": "15s", "5m": "10s", "2m": "5s", "1m": "3s"}
_RANGE = re.compile(r"\[(\d+[smhdwy])\]")


def shorten(duration: str) -> str:
    if duration not in SHORT_DURATIONS:
        raise KeyError(f"no short test value for duration {duration!r}: add it to SHORT_DURATIONS")
    return SHORT_DURATIONS[duration]


def short_window_rules(doc: dict[str, Any]) -> dict[str, Any]:
    """The rule file with every range window and every ``for:`` replaced by its short test value: expressions,
    thresholds, labels and annotations stay the real ones."""
    out = copy.deepcopy(doc)
    for group in out["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _RANGE.sub(lambda m: f"[{shorten(m.group(1))}]", rule["expr"])
            if "for" in rule:
                rule["for"] = shorten(rule["for"])
    return out
