"""Grafana dashboards in monitoring/grafana: Grafana is not packaged in Debian, so instead of loading them into a
Grafana these tests hold them to the dashboard JSON model (ids, grid, targets, data source variables), parse every
query with Prometheus' own parser (`promtool check rules` over a rule file made of the queries), and accept only
metric names the pool or a cited exporter exports. tests/integration/test_monitoring_live.py runs the same
queries against a live Prometheus scraping a real node and pool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.monitoring import (
    DASHBOARD_PROVIDER,
    DASHBOARDS,
    REPO,
    dashboard_queries,
    expand_grafana_vars,
    exporter_metric_names,
    grafana_variables_used,
    load_dashboards,
    pool_metric_names,
    promql_metric_names,
    proxy_metric_names,
)

pytestmark = pytest.mark.unit

EXPECTED = {"pool-overview.json", "miners.json", "node.json", "infra.json"}
DATA_PANELS = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "piechart"}
LAYOUT_PANELS = {"row", "text"}
DS_VARIABLE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


def test_the_four_dashboards_are_there(boards: dict[str, dict[str, Any]]) -> None:
    assert set(boards) == EXPECTED
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    titles = [b["title"] for b in boards.values()]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_model(boards: dict[str, dict[str, Any]], name: str) -> None:
    board = boards[name]
    text = (DASHBOARDS / name).read_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["title"] and board["panels"]
    assert board["editable"] is False, "provisioned dashboards are edited in the repo, not in the UI"
    # an exported-for-sharing dashboard has __inputs and ${DS_...} placeholders that provisioning cannot fill
    assert "__inputs" not in board and "${DS_" not in text
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DS_VARIABLE, var["name"]

    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) for i in ids)
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        where = f"{name}: panel {panel.get('title')!r}"
        assert panel["type"] in DATA_PANELS | LAYOUT_PANELS, where
        assert panel.get("title"), where
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), where
        assert pos["h"] > 0 and pos["w"] > 0 and pos["x"] >= 0 and pos["y"] >= 0 and pos["x"] + pos["w"] <= 24, where
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{where} overlaps another panel"
        cells |= mine
        if panel["type"] in LAYOUT_PANELS:
            assert "targets" not in panel, where
            continue
        assert panel["datasource"] == DS_VARIABLE, where
        targets = panel["targets"]
        assert targets, where
        ref_ids = [t["refId"] for t in targets]
        assert len(set(ref_ids)) == len(ref_ids), where
        for target in targets:
            assert target["datasource"] == DS_VARIABLE, where
            assert target["expr"].strip(), where
        assert panel["fieldConfig"]["defaults"].get("unit"), where


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_queries_use_only_defined_variables(boards: dict[str, dict[str, Any]], name: str) -> None:
    board = boards[name]
    defined = {v["name"] for v in board["templating"]["list"]}
    for where, expr in dashboard_queries(board):
        assert grafana_variables_used(expr) <= defined, f"{name} {where}: {expr}"


def test_every_query_parses_with_prometheus_parser(boards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (apt-get install prometheus)")
    rules = []
    for name, board in boards.items():
        for i, (_, expr) in enumerate(dashboard_queries(board)):
            record = re.sub(r"\W", "_", f"dashboard:{name}:{i}").replace("_json_", ":")
            rules.append({"record": record, "expr": expand_grafana_vars(expr)})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_every_query_names_a_metric_that_is_exported(boards: dict[str, dict[str, Any]]) -> None:
    known = pool_metric_names() | proxy_metric_names() | {"up"}
    for exporter in exporter_metric_names().values():
        known |= set(exporter["metrics"])
    used: set[str] = set()
    for name, board in boards.items():
        for where, expr in dashboard_queries(board):
            names = promql_metric_names(expand_grafana_vars(expr))
            assert names, f"{name} {where}: no metric in {expr!r}"
            assert names <= known, f"{name} {where}: unknown metrics {sorted(names - known)}"
            used |= names
    # every cited exporter name is used somewhere (the list is the dashboards' and alerts' vocabulary, not a dump)
    from support.monitoring import alert_rules

    for rule in alert_rules():
        used |= promql_metric_names(rule["expr"])
    for exporter, entry in exporter_metric_names().items():
        assert set(entry["metrics"]) <= used, f"{exporter}: listed but unused {sorted(set(entry['metrics']) - used)}"


def test_provisioning_points_grafana_at_these_files() -> None:
    provider_doc = yaml.safe_load(DASHBOARD_PROVIDER.read_text())
    assert provider_doc["apiVersion"] == 1
    (provider,) = provider_doc["providers"]
    assert provider["type"] == "file"
    # monitoring/grafana/provisioning mirrors the container's /etc/grafana/provisioning
    relative = DASHBOARDS.relative_to(DASHBOARD_PROVIDER.parents[1])
    assert provider["options"]["path"] == f"/etc/grafana/provisioning/{relative}"
    compose = (REPO / "src" / "ckbpool" / "templates" / "compose.yaml.j2").read_text()
    assert "./grafana/provisioning:/etc/grafana/provisioning" in compose


def test_metric_name_extraction() -> None:
    assert promql_metric_names(
        'sum by (result) (rate(ckbpool_shares_total{result!="accepted", job=~"a|b"}[5m])) / ignoring(x) '
        "sum(rate(ckbpool_shares_total[5m] offset 1h)) > bool 0.05 and on(job) up == 1e3"
    ) == {"ckbpool_shares_total", "up"}
    assert promql_metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))".replace("$__rate_interval", "1m")
    ) == {"x_bucket"}
    assert promql_metric_names('label_replace(a, "dst", "$1", "src", "(.*)") - b:recorded') == {"a", "b:recorded"}
    assert expand_grafana_vars('rate(x{job=~"$job", i=~"${instance}"}[$__rate_interval])') == (
        'rate(x{job=~".*", i=~".*"}[1m])'
    )
    assert json.loads(json.dumps(DS_VARIABLE)) == DS_VARIABLE
