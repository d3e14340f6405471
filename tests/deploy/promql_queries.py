"""Every PromQL expression the deployment ships, as plain strings ready for Prometheus' API.

Owns: reading the Grafana dashboard's panel and variable queries (with Grafana's variables
substituted) and the alert rules' expressions, and the metric names the supervisor exports
(read from its real registry). The static tests check these expressions; a live test can send each one to
`/api/v1/query` of a Prometheus that scrapes a running supervisor.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from chart_render import ALERTS_FILE, DASHBOARD_FILE

from supervisor.metrics import DraState, FleetState, Metrics, SupervisorState

# The series names each metric type puts on a scrape (prometheus_client's text format). A
# counter's `_created` series is left out on purpose: it is a timestamp, not for dashboards.
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
}


def exported_metric_names() -> frozenset[str]:
    """Every series name the supervisor exports, from its real registry (supervisor.metrics).

    A registry is built with a state in which every scrape-time family appears (the
    pod-resources API up, a DRA resource served), and each family's type says which series
    it puts on a scrape, so labelled metrics count before any label set exists."""
    dra = DraState(registered=True, prepared={})
    fleet = FleetState(nodes=0, in_use={}, capacity={}, allocatable={})
    state = SupervisorState(
        resources=(), config_ok=True, pod_resources_up=True, dra=dra, fleet=fleet
    )
    metrics = Metrics(lambda: state)
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type not in SERIES_SUFFIXES:
            raise ValueError(f"{family.name}: metric type {family.type!r}: add its series")
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
    return frozenset(names)


# Dashboards and alerts may use only these.
KNOWN_METRICS = exported_metric_names()

PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan"}
)


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression and where it comes from (for test ids and error messages)."""

    source: str
    expr: str


def grafana_substitute(
    expr: str,
    *,
    node: str = ".*",
    resource: str = ".*",
    rate_interval: str = "1m",
    interval: str = "30s",
    range_: str = "1h",
) -> str:
    """Replace Grafana's variables (`$node`, `${resource}`, `$__rate_interval`, ...)."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__range": range_,
        "node": node,
        "resource": resource,
    }
    # Longest names first, so `$__range` does not eat the start of a longer name.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    if "$" in expr:
        raise ValueError(f"unsubstituted Grafana variable in {expr!r}")
    return expr


def load_dashboard(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def iter_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(dashboard: dict[str, Any] | None = None, **substitutions: str) -> list[Query]:
    """Every panel target's expression, variables substituted (see `grafana_substitute`)."""
    dashboard = load_dashboard() if dashboard is None else dashboard
    return [
        Query(
            f"panel {panel['title']!r} target {target.get('refId', '?')}",
            grafana_substitute(target["expr"], **substitutions),
        )
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_queries(dashboard: dict[str, Any] | None = None) -> list[Query]:
    """The selectors inside the template variables' `label_values(SELECTOR, label)` queries."""
    dashboard = load_dashboard() if dashboard is None else dashboard
    found = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        if match is None:
            raise ValueError(f"variable {var['name']}: unsupported query {query!r}")
        found.append(Query(f"variable {var['name']!r}", grafana_substitute(match.group(1))))
    return found


def alert_rules(path: Path = ALERTS_FILE) -> list[dict[str, Any]]:
    """The alerting rules of every group in the rule file."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alert_expressions(path: Path = ALERTS_FILE) -> list[Query]:
    """Every alert's expression, keyed by the alert's name."""
    return [Query(f"alert {rule['alert']}", str(rule["expr"])) for rule in alert_rules(path)]


def all_queries() -> list[Query]:
    """Everything a live Prometheus should be able to evaluate."""
    return dashboard_queries() + variable_queries() + alert_expressions()


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (a lexical approximation good for our queries).

    Strips strings, label matchers, grouping clauses and range selectors, then takes every
    identifier that is not a function call, keyword or number.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"(?<![A-Za-z0-9_:])[0-9][0-9.eE+]*(ms|[smhdwy])?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        word = match.group(0)
        if following.startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names
