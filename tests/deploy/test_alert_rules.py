"""The alert rules: valid for promtool, unit-tested, and the same in the chart as in the file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import ALERTS_FILE, VALUES_DIR, one, render
from promql_queries import KNOWN_METRICS, alert_expressions, alert_rules, metric_names

TESTS_FILE = Path(__file__).with_name("alerts_test.yaml")
REQUIRED_ALERTS = {
    "WidgetPluginNotRegistered",
    "WidgetConfigReloadFailing",
    "WidgetDevicesUnhealthy",
    "WidgetAllocationErrors",
    "WidgetPodResourcesUnavailable",
}


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def unit_tests() -> list[dict[str, Any]]:
    return list(yaml.safe_load(TESTS_FILE.read_text())["tests"])


def test_the_required_alerts_exist() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_says_what_and_how_bad(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"]
    assert len(rule["annotations"]["description"]) > 80


def test_not_registered_waits_five_minutes() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "WidgetPluginNotRegistered"]
    assert rule["for"] == "5m"


@pytest.mark.parametrize("query", alert_expressions(), ids=lambda q: q.source)
def test_alerts_use_only_known_metrics(query: Any) -> None:
    names = metric_names(query.expr)
    assert names, query.expr
    assert names <= KNOWN_METRICS, f"unknown metric(s) {names - KNOWN_METRICS}"


def test_promtool_checks_the_rule_file(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(ALERTS_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_checks_the_rendered_prometheus_rule(
    promtool: str, helm: str, tmp_path: Path
) -> None:
    rule = one(render(helm, values=[VALUES_DIR / "monitoring.yaml"]), "PrometheusRule")
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    done = run(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    done = run(promtool, "test", "rules", str(TESTS_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS))
def test_each_alert_is_shown_firing_and_not_firing(alert: str) -> None:
    checks = [c for t in unit_tests() for c in t["alert_rule_test"] if c["alertname"] == alert]
    assert any(c["exp_alerts"] for c in checks), f"{alert} is never shown firing"
    assert any(not c["exp_alerts"] for c in checks), f"{alert} is never shown quiet"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param("for: 5m", "for: 1m", id="shorter-for"),
        pytest.param('{health="Unhealthy"}) > 0', '{health="Unhealthy"}) > 5', id="threshold"),
        pytest.param("offset 10m", "offset 1m", id="first-error-window"),
        pytest.param(
            'increase(widget_allocation_errors_total{reason!="injected_failure"}[10m])',
            "increase(widget_allocation_errors_total[10m])",
            id="injected-failures-alert",
        ),
        pytest.param(
            'widget_allocation_errors_total{reason!="injected_failure"}\n',
            "widget_allocation_errors_total\n",
            id="first-injected-failure-alerts",
        ),
        pytest.param("for: 15m", "for: 10m", id="pod-resources-for"),
        pytest.param("(widget_pod_resources_up) == 0", "(widget_pod_resources_up) < 2", id="up"),
    ],
)
def test_unit_tests_catch_a_changed_rule(promtool: str, tmp_path: Path, old: str, new: str) -> None:
    """A copy of the rules with one change must fail the unit tests."""
    rules = ALERTS_FILE.read_text()
    assert old in rules
    (tmp_path / "alerts.yaml").write_text(rules.replace(old, new))
    tests = yaml.safe_load(TESTS_FILE.read_text())
    tests["rule_files"] = ["alerts.yaml"]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests))
    done = run(promtool, "test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert done.returncode != 0, done.stdout
    assert "FAILED" in done.stdout + done.stderr
