"""Alert rules in monitoring/prometheus: `promtool check rules`, `promtool test rules` (every alert fires in one
case and stays quiet in another), the rendered prometheus.yml with these rules passes `promtool check config`,
and every metric an alert reads is one the pool or a cited exporter exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from support.monitoring import (
    RULE_TESTS,
    RULES,
    alert_rules,
    exporter_metric_names,
    pool_metric_names,
    promql_metric_names,
    proxy_metric_names,
    short_window_rules,
)

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt-get install prometheus)"),
]

# the alerts issue 10 asks for, by the name the rule file gives them
REQUIRED_ALERTS = {
    "TargetDown",  # a target down
    "CkbNodeTipNotAdvancing",  # node tip not advancing for 10 min
    "CkbpoolNoNewTemplate",  # no new template for 60 s
    "CkbpoolHashrateDrop",  # pool hashrate below 50% of its 1 h average
    "CkbpoolShareRejectRateHigh",  # share reject rate above 5%
    "CkbpoolBlockSubmitFailed",  # block submit failures
    "KafkaConsumerLagGrowing",  # Kafka consumer lag growing
    "RedisDown",  # Redis down
    "DiskAlmostFull",  # disk almost full
}


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    files = sorted(RULE_TESTS.glob("*.yml"))
    assert files
    out = promtool("test", "rules", *files)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS
    assert names - fires == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"
    assert (fires | quiet) <= names, "tests name alerts the rule file does not have"


def test_alerts_follow_the_conventions() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["alert"][0].isupper() and "_" not in rule["alert"], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"].keys() >= {"summary", "description"}, rule["alert"]


def test_alerts_read_only_metrics_that_exist() -> None:
    known = pool_metric_names() | proxy_metric_names() | {"up"}
    for exporter in exporter_metric_names().values():
        known |= set(exporter["metrics"])
    for rule in alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']} reads unknown metrics {sorted(names - known)}"


def test_short_window_copy_changes_only_durations(tmp_path: Path) -> None:
    """The live test evaluates this copy: same expressions, thresholds and labels, shorter windows."""
    real = yaml.safe_load(RULES.read_text())
    short = short_window_rules(real)
    path = tmp_path / "short.yml"
    path.write_text(yaml.safe_dump(short, sort_keys=False))
    out = promtool("check", "rules", path)
    assert out.returncode == 0, out.stdout + out.stderr
    for group_real, group_short in zip(real["groups"], short["groups"], strict=True):
        for a, b in zip(group_real["rules"], group_short["rules"], strict=True):
            assert a["labels"] == b["labels"] and a["annotations"] == b["annotations"]
            assert not re.search(r"\[\d+[mhdwy]\]", b["expr"]), b["expr"]
            assert promql_metric_names(a["expr"]) == promql_metric_names(b["expr"])
    tip = next(r for g in short["groups"] for r in g["rules"] if r.get("alert") == "CkbNodeTipNotAdvancing")
    assert "changes(ckb_chain_tip[15s]) == 0" in tip["expr"]


def test_rendered_prometheus_config_with_these_rules_passes_promtool(tmp_path: Path) -> None:
    """`ckbpool render` writes prometheus.yml with `rule_files: [rules/*.yml]`: with this rule file in rules/,
    `promtool check config` loads it (and every other rule file the render put there)."""
    config = tmp_path / "ckbpool.yaml"
    runner = CliRunner()
    assert runner.invoke(app, ["init", "-c", str(config), "-y", "--kafka"]).exit_code == 0
    result = runner.invoke(app, ["render", "-c", str(config), "--no-diff"])
    assert result.exit_code == 0, result.stderr
    for place in ("local", "compose"):
        prom_dir = tmp_path / "workspace" / place / "prometheus"
        rendered = yaml.safe_load((prom_dir / "prometheus.yml").read_text())
        assert "rules/*.yml" in rendered["rule_files"]
        jobs = {job["job_name"] for job in rendered["scrape_configs"]}
        assert {"ckbpool", "ckb", "node", "prometheus"} <= jobs  # the job names the rules rely on
        shutil.copy(RULES, prom_dir / "rules" / "ckbpool-alerts.yml")
        out = promtool("check", "config", prom_dir / "prometheus.yml")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "ckbpool-alerts.yml" in out.stdout
        assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout
