"""Rendering the Helm chart for the deploy tests: `helm template` into Python objects.

Owns the paths of the deployment artefacts, a cached renderer and the node names that select
each `nodes` entry of a config; no test assertions here.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "widget-plugin"
VALUES_DIR = Path(__file__).resolve().parent / "values"
ALERTS_FILE = CHART_DIR / "files" / "alerts.yaml"
DASHBOARD_FILE = CHART_DIR / "dashboards" / "widget-plugin.json"
RELEASE = "widget"
NAMESPACE = "widget-system"

Manifest = dict[str, Any]


def values_files() -> list[Path]:
    """The values files every render test runs with (besides the chart's defaults)."""
    return sorted(VALUES_DIR.glob("*.yaml"))


def helm_template(
    helm: str,
    *,
    values: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    chart: Path = CHART_DIR,
) -> subprocess.CompletedProcess[str]:
    """Run `helm template` and return the finished process (no check on its exit code)."""
    cmd = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for path in values:
        cmd += ["--values", str(path)]
    for item in set_values:
        cmd += ["--set", item]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@functools.cache
def _render_cached(helm: str, values: tuple[Path, ...], set_values: tuple[str, ...]) -> str:
    done = helm_template(helm, values=values, set_values=set_values)
    if done.returncode != 0:
        raise AssertionError(f"helm template failed:\n{done.stderr}")
    return done.stdout


def render(
    helm: str, *, values: Sequence[Path] = (), set_values: Sequence[str] = ()
) -> list[Manifest]:
    """Every object `helm template` renders (hooks such as the test pod included)."""
    text = _render_cached(helm, tuple(values), tuple(set_values))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    """The single object of `kind` (whose name ends with `name_suffix`)."""
    found = [
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def node_names(config: dict[str, Any]) -> list[str]:
    """A node name selecting each `nodes` entry (its `match` with every wildcard made "1"),
    then one that selects none."""
    names = []
    for entry in config.get("nodes", []):
        name = re.sub(r"\[[^\]]*\]|[*?]", "1", entry["match"])
        assert fnmatch.fnmatchcase(name, entry["match"]), (name, entry["match"])
        names.append(name)
    none = "no-such-node-0"
    assert not any(fnmatch.fnmatchcase(none, e["match"]) for e in config.get("nodes", []))
    return [*names, none]


def render_notes(
    helm: str, tmp_path: Path, *, values: Sequence[Path] = (), set_values: Sequence[str] = ()
) -> str:
    """NOTES.txt as `helm install` would print it.

    `helm template` never renders NOTES.txt and `helm install --dry-run` needs a cluster, so a
    copy of the chart renders the file's text through `tpl` inside a throwaway ConfigMap.
    """
    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart)
    (chart / "files" / "NOTES.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "files/NOTES.txt") . | indent 4 }}\n'
    )
    cmd = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    cmd += ["--show-only", "templates/zz-notes.yaml"]
    for path in values:
        cmd += ["--values", str(path)]
    for item in set_values:
        cmd += ["--set", item]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return str(yaml.safe_load(done.stdout)["data"]["notes"])
