"""The Grafana dashboard: importable, every panel explained, every query well-formed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from promql_queries import (
    KNOWN_METRICS,
    Query,
    dashboard_queries,
    grafana_substitute,
    iter_panels,
    load_dashboard,
    metric_names,
    variable_queries,
)

from plugin_worker.api import Device
from supervisor.metrics import DraState, FleetState, Metrics, ResourceState, SupervisorState
from supervisor.podresources import Holder

# Metrics per node (no `resource` label): the Resource variable cannot filter them.
PER_NODE_METRICS = {
    "widget_config_reloads_total",
    "widget_config_last_reload_successful",
    "widget_pod_resources_up",
    "widget_dra_plugin_registered",
    "widget_dra_prepare_total",
    "widget_dra_prepare_duration_seconds_bucket",
    "widget_dra_resourceslice_writes_total",
    "widget_simulated_nodes",
    "widget_simulated_node_writes_total",
}
# The simulator's metrics (`widget-supervisor simulate`): one process for the whole cluster,
# whose series carry no pod node; the Node variable lists real nodes only.
FLEET_PREFIX = "widget_simulated_"
DEFAULT_TITLES = {"", "Panel Title", "New panel", "New Panel", "Row title", "New row"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panels(kind: Callable[[dict[str, Any]], bool] = lambda p: p["type"] != "row") -> list[Any]:
    return [p for p in iter_panels(load_dashboard()) if kind(p)]


def panel_id(panel: dict[str, Any]) -> str:
    return str(panel.get("title") or panel["id"])


def test_dashboard_is_importable_on_its_own() -> None:
    dashboard = load_dashboard()
    assert dashboard["__inputs"] == []  # no DS_* input: the sidecar would not fill it in
    assert dashboard["uid"] == "widget-device-plugin"
    assert dashboard["title"] == "Widget device plugin"
    assert "id" not in dashboard or dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("node", "resource"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["includeAll"] is True


@pytest.mark.parametrize("panel", panels(), ids=panel_id)
def test_every_panel_is_titled_described_and_has_a_unit(panel: dict[str, Any]) -> None:
    assert panel["title"] not in DEFAULT_TITLES
    assert len(panel["description"]) > 30
    assert panel["fieldConfig"]["defaults"]["unit"]
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"], "a panel without queries"
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE
        assert target["legendFormat"], "legend left to Grafana's default"


def test_panel_titles_and_ids_are_unique() -> None:
    every = iter_panels(load_dashboard())
    titles = [p["title"] for p in every]
    assert len(titles) == len(set(titles))
    assert len({p["id"] for p in every}) == len(every)
    assert all(p["title"] not in DEFAULT_TITLES for p in every)


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(load_dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize(
    "metric",
    [
        "widget_devices",
        "widget_allocations_total",
        "widget_allocated_devices_total",
        "widget_allocation_errors_total",
        "widget_allocate_duration_seconds_bucket",
        "widget_plugin_registered",
        "widget_config_reloads_total",
        "widget_devices_in_use",
        "widget_device_allocation",
        "widget_pod_resources_up",
        "widget_dra_plugin_registered",
        "widget_dra_prepared_claims",
        "widget_dra_prepare_total",
        "widget_dra_prepare_duration_seconds_bucket",
        "widget_dra_resourceslice_writes_total",
        "widget_simulated_nodes",
        "widget_simulated_capacity",
        "widget_simulated_allocatable",
        "widget_simulated_node_writes_total",
    ],
)
def test_the_required_metrics_are_on_the_dashboard(metric: str) -> None:
    used = set().union(*(metric_names(q.expr) for q in dashboard_queries()))
    assert metric in used


@pytest.mark.parametrize(
    ("title", "histogram", "grouping"),
    [
        ("Allocate latency p50 / p99", "widget_allocate_duration_seconds_bucket", "le, resource"),
        # No `resource` label: one claim may hold devices of several resources.
        ("Prepare latency p50 / p99", "widget_dra_prepare_duration_seconds_bucket", "le"),
    ],
    ids=["allocate", "dra-prepare"],
)
def test_latency_panels_show_p50_and_p99_from_the_histogram(
    title: str, histogram: str, grouping: str
) -> None:
    assert len([p for p in panels() if "latency" in p["title"].lower()]) == 2
    (latency,) = [p for p in panels() if p["title"] == title]
    exprs = [t["expr"] for t in latency["targets"]]
    assert sorted(e.partition(",")[0] for e in exprs) == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
    ]
    assert all(metric_names(e) == {histogram} for e in exprs)
    assert all(f"sum by ({grouping}) (rate(" in e for e in exprs)
    assert latency["fieldConfig"]["defaults"]["unit"] == "s"


def test_queries_filter_by_node_and_resource() -> None:
    """Every query follows the Node and Resource variables, where its metrics have the label.
    The simulated fleet's do not filter by node: the simulator's series have no `node` of the
    pod (its widget_devices_in_use has the simulated node's, which the variable never lists),
    and `node=~"live-node-1"` would hide the whole fleet."""
    for panel in panels():
        for target in panel["targets"]:
            # Substituted first: `offset $__rate_interval` would read as a metric name.
            names = metric_names(grafana_substitute(target["expr"]))
            fleet = any(n.startswith(FLEET_PREFIX) for n in names)
            assert ('node=~"$node"' in target["expr"]) != fleet, panel["title"]
            if not names <= PER_NODE_METRICS:
                assert 'resource=~"$resource"' in target["expr"], panel["title"]


def test_who_holds_which_device_is_a_table_of_holders() -> None:
    (table,) = [p for p in panels() if p["title"] == "Who holds which device"]
    assert table["type"] == "table"
    (target,) = table["targets"]
    assert target["format"] == "table"
    assert target["instant"] is True
    assert metric_names(target["expr"]) == {"widget_device_allocation"}
    grouping = "by (node, resource, device, namespace, pod, container)"
    assert grouping in target["expr"]
    (organize,) = [t for t in table["transformations"] if t["id"] == "organize"]
    assert organize["options"]["excludeByName"] == {"Time": True, "Value": True}
    columns = sorted(organize["options"]["indexByName"], key=organize["options"]["indexByName"].get)
    assert columns == ["node", "resource", "device", "namespace", "pod", "container"]


def test_error_panels_break_errors_down_by_reason_and_explain_injected_failures() -> None:
    errors = [p for p in panels() if "errors" in p["title"].lower()]
    assert len(errors) == 2
    for panel in errors:
        assert re.match(r"sum by \((\w+, )*reason\)", panel["targets"][0]["expr"]), panel["title"]
        assert "{{reason}}" in panel["targets"][0]["legendFormat"], panel["title"]
        assert "injected_failure is expected" in panel["description"], panel["title"]


def row_panels(title: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The panels of the row called `title`, and every panel above that row."""
    every = load_dashboard()["panels"]
    start = next(i for i, p in enumerate(every) if p["title"] == title)
    end = next((i for i, p in enumerate(every) if i > start and p["type"] == "row"), len(every))
    return every[start + 1 : end], every[:start]


def test_the_dra_row_follows_the_device_plugin_rows_and_holds_every_dra_query() -> None:
    """Below the device-plugin rows, one panel per DRA concern; no DRA query elsewhere."""
    every = load_dashboard()["panels"]
    rows = [p["title"] for p in every if p["type"] == "row"]
    assert rows[-2:] == ["DRA", "Simulated fleet"]
    dra, rest = row_panels("DRA")
    assert [p["title"] for p in dra] == [
        "DRA plugin registered per node",
        "Prepared claims per node and resource",
        "Claims prepared per second by result",
        "Prepare latency p50 / p99",
        "ResourceSlice writes by result",
    ]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in rest)
    assert every[len(rest)]["gridPos"]["y"] == bottom
    for panel in dra:
        assert panel["gridPos"]["y"] > bottom, panel["title"]
    dra_queries = {q.source for q in dashboard_queries({"panels": dra})}
    for query in dashboard_queries():
        is_dra = {m.startswith("widget_dra_") for m in metric_names(query.expr)}
        assert is_dra == {query.source in dra_queries}, query.source
    (registered,) = [p for p in dra if p["type"] == "state-timeline"]
    mappings = registered["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: v["text"] for k, v in mappings.items()} == {"0": "Not registered", "1": "Registered"}


def test_the_fleet_row_is_last_and_holds_every_simulated_query() -> None:
    """At the bottom, the simulated nodes (`widget-supervisor simulate`): how many, their
    devices, their status writes; no query of the simulator's own metrics elsewhere."""
    every = load_dashboard()["panels"]
    assert [p["title"] for p in every if p["type"] == "row"][-1] == "Simulated fleet"
    fleet, rest = row_panels("Simulated fleet")
    assert [p["title"] for p in fleet] == [
        "Simulated nodes",
        "Simulated capacity, allocatable and in use",
        "Node status writes by result",
    ]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in rest)
    assert every[len(rest)]["gridPos"]["y"] == bottom
    assert all(p["gridPos"]["y"] > bottom for p in fleet)
    fleet_queries = {q.source for q in dashboard_queries({"panels": fleet})}
    for query in dashboard_queries():
        reads = any(m.startswith(FLEET_PREFIX) for m in metric_names(query.expr))
        assert reads == (query.source in fleet_queries), query.source


def test_fleet_devices_compare_capacity_allocatable_and_the_simulators_in_use() -> None:
    """Per resource, summed over the simulated nodes. In use is the simulator's own
    widget_devices_in_use (the node agents export one too, without a simulated node): only
    series scraped from a target that reports simulated nodes count, and a resource nobody
    holds reads 0 rather than nothing."""
    (devices,) = [p for p in panels() if p["title"] == "Simulated capacity, allocatable and in use"]
    exprs = {t["refId"]: t["expr"] for t in devices["targets"]}
    legends = {t["refId"]: t["legendFormat"] for t in devices["targets"]}
    capacity = 'widget_simulated_capacity{resource=~"$resource"}'
    assert exprs["A"] == f"sum by (resource) ({capacity})"
    assert exprs["B"] == 'sum by (resource) (widget_simulated_allocatable{resource=~"$resource"})'
    assert exprs["C"] == (
        'sum by (resource) (widget_devices_in_use{resource=~"$resource"} and on (job, instance) '
        f"widget_simulated_nodes) or (sum by (resource) ({capacity}) * 0)"
    )
    assert legends == {
        "A": "{{resource}} capacity",
        "B": "{{resource}} allocatable",
        "C": "{{resource}} in use",
    }
    (nodes,) = [p for p in panels() if p["title"] == "Simulated nodes"]
    assert [t["expr"] for t in nodes["targets"]] == ["sum(widget_simulated_nodes)"]


@pytest.mark.parametrize("title", ["Config reloads", "Newest config accepted per node"])
def test_config_panels_name_the_simulator_which_has_no_node(title: str) -> None:
    """The simulator reads the same config as the node agents but runs on no node of its own
    (its series have no `node`): these per-node panels show it as "simulator", not as a
    series without a name."""
    (panel,) = [p for p in panels() if p["title"] == title]
    (target,) = panel["targets"]
    assert '"node", "simulator", "node", "")' in target["expr"]
    assert target["expr"].startswith(("sum by (node, result) (label_replace(", "max by (node) ("))
    assert "simulator" in panel["description"]


@pytest.mark.parametrize(
    ("title", "selector"),
    [
        ("ResourceSlice writes by result", 'widget_dra_resourceslice_writes_total{node=~"$node"}'),
        ("Node status writes by result", "widget_simulated_node_writes_total"),
    ],
    ids=["resourceslices", "simulated-nodes"],
)
def test_write_panels_count_a_series_born_after_the_writer_started_writing(
    title: str, selector: str
) -> None:
    """A supervisor publishes its slices (the simulator its nodes' status) before Prometheus
    first scrapes it: `increase()` alone would show nothing for a fresh pod, so a series'
    first value counts whole."""
    (writes,) = [p for p in panels() if p["title"] == title]
    (target,) = writes["targets"]
    assert target["expr"] == (
        f"sum by (result) ((increase({selector}[$__rate_interval]) and {selector} offset "
        f"$__rate_interval) or ({selector} unless {selector} offset $__rate_interval))"
    )
    assert "{{result}}" in target["legendFormat"]


def test_devices_in_use_shows_a_gap_not_a_false_zero_while_pod_resources_is_down() -> None:
    (in_use,) = [p for p in panels() if p["title"] == "Devices in use"]
    expr = in_use["targets"][0]["expr"]
    assert metric_names(expr) == {"widget_devices_in_use", "widget_pod_resources_up"}
    assert expr.endswith(
        'and on (node) (max by (node) (widget_pod_resources_up{node=~"$node"}) == 1)'
    )


@pytest.mark.parametrize("query", dashboard_queries() + variable_queries(), ids=lambda q: q.source)
def test_queries_use_only_known_metrics(query: Query) -> None:
    names = metric_names(query.expr)
    assert names, f"no metric found in {query.expr}"
    assert names <= KNOWN_METRICS, f"unknown metric(s) {names - KNOWN_METRICS}"


def test_unknown_metrics_are_caught() -> None:
    """The checker itself: a misspelt metric, or one hidden in a binary expression."""
    assert metric_names('sum by (node) (rate(widget_alocations_total{a="b"}[5m]))') == {
        "widget_alocations_total"
    }
    assert metric_names("widget_devices / on(node) group_left up") == {"widget_devices", "up"}
    assert metric_names("count(x == 0) or vector(0)") == {"x"}
    assert metric_names("a unless b offset 10m > 1e3") == {"a", "b"}


def test_known_metrics_are_what_a_busy_supervisor_exports() -> None:
    """KNOWN_METRICS comes from metric types; a scrape of a registry that has seen every event
    (a resource, an allocation, a refusal, a registration, a reload, a holder, a DRA claim
    prepared, a slice written, a simulated node's status written) shows exactly those series,
    `_created` timestamps aside."""
    holder = Holder("ska-sdp.org/snaffler-v1", "snaffler-v1-a", "default", "pod", "main")
    resource = ResourceState("ska-sdp.org/snaffler-v1", (Device("snaffler-v1-a", "/dev/a"),), True)
    dra = DraState(registered=True, prepared={"ska-sdp.org/gizmo-mk2": 1})
    fleet = FleetState(
        nodes=1, in_use={("kwok-1", resource.name): 1}, capacity={resource.name: 2},
        allocatable={resource.name: 2},
    )  # fmt: skip
    state = SupervisorState(
        (resource,), config_ok=True, pod_resources_up=True, holders=(holder,), dra=dra,
        fleet=fleet,
    )  # fmt: skip
    metrics = Metrics(lambda: state)
    metrics.resource_added(resource.name)
    metrics.allocated(resource.name, containers=1, devices=1, seconds=0.001)
    metrics.allocation_failed(resource.name, reason="unknown_device", seconds=0.001)
    metrics.registration_changed(resource.name, registered=True)
    metrics.reloaded(ok=True)
    metrics.prepared(result="success", seconds=0.001)
    metrics.resourceslice_written("ok")
    metrics.fleet_written("ok")
    scraped = {
        found.name
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for found in family.samples
    }
    assert {n for n in scraped if not n.endswith("_created")} == KNOWN_METRICS
    assert {"widget_allocate_duration_seconds_bucket", "widget_allocations_total"} <= KNOWN_METRICS


def test_grafana_variables_are_substituted() -> None:
    expr = 'rate(m{node=~"$node", resource=~"${resource}"}[$__rate_interval]) [$__range]'
    assert grafana_substitute(expr, node="n1", resource="r") == (
        'rate(m{node=~"n1", resource=~"r"}[1m]) [1h]'
    )
    with pytest.raises(ValueError, match="unsubstituted"):
        grafana_substitute("m{x=~'$cluster'}")


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query, written as a recording rule."""
    queries = dashboard_queries() + variable_queries()
    rules = [{"record": f"dashboard:query_{i}", "expr": q.expr} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_promtool_rejects_a_broken_query(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    rule = {"record": "dashboard:broken", "expr": "sum by (node (widget_devices)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [rule]}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
