"""The command line, through click's CliRunner and (for demo) as a real process."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from supervisor import __version__
from supervisor.cli import main
from tests.support import wait_until


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_version() -> None:
    assert invoke("--version") == (0, f"widget-supervisor, version {__version__}\n")


def test_validate_summarises(examples: Path) -> None:
    code, output = invoke("validate", "--config", str(examples / "multi.yml"))
    assert code == 0
    assert "OK: 4 resources, 8 devices" in output
    assert "  ska-sdp.org/doohickey-a100: 1 device\n" in output


def test_validate_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("devices:\n- type: a\n  model: 1\n  device: x\n")
    code, output = invoke("validate", "--config", str(bad))
    assert code == 1
    assert f"{bad}:3: devices[0].model: must be a non-empty string" in output
    assert f"{bad}:4: devices[0].device: must be an absolute path" in output


def test_config_from_environment(examples: Path) -> None:
    code, output = invoke("validate", env={"WIDGET_CONFIG": str(examples / "widget.yml"),
                                           "WIDGET_DOMAIN": "acme.io"})  # fmt: skip
    assert code == 0
    assert "acme.io/snaffler-v1: 2 devices" in output


def test_strict_perms_env_switch(tmp_path: Path, examples: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_bytes((examples / "widget.yml").read_bytes())
    config.chmod(0o666)
    assert invoke("validate", "--config", str(config))[0] == 1
    assert invoke("validate", "--config", str(config), env={"WIDGET_STRICT_PERMS": "false"})[0] == 0


def test_resources_shows_faults_topology_and_replicas(examples: Path) -> None:
    code, table = invoke("resources", "--config", str(examples / "health-faults.yml"))
    assert code == 0
    rows = {line.split()[2]: line.split(None, 6)[4:] for line in table.splitlines()[1:]}
    assert rows["gizmo-mk2-gizmo0"][0] == "Unhealthy"  # the whole resource is failing
    assert rows["snaffler-v1-wibble2"] == ["Healthy", "-", "after 30s, for 60s"]
    assert rows["snaffler-v1-wibble3"][2] == "after 5s, flap 10s"
    code, text = invoke("resources", "--config", str(examples / "shared.yml"), "-o", "json")
    device = json.loads(text)["resources"][0]["devices"][0]
    assert device == {"id": "snaffler-v1-wibble1::1", "path": "/dev/wibble1", "health": "Healthy",
                      "replicaOf": "snaffler-v1-wibble1"}  # fmt: skip
    code, text = invoke("resources", "--config", str(examples / "topology.yml"), "-o", "json")
    assert json.loads(text)["resources"][1]["devices"][3]["numa"] == 1


def test_resources_table_and_json(examples: Path) -> None:
    code, table = invoke("resources", "--config", str(examples / "widget.yml"))
    assert code == 0
    assert table.splitlines()[1].split() == [
        "ska-sdp.org/snaffler-v1", "device-plugin", "snaffler-v1-wibble1", "/dev/wibble1",
        "Healthy", "-", "-",
    ]  # fmt: skip
    code, text = invoke("resources", "--config", str(examples / "widget.yml"), "-o", "json")
    document = json.loads(text)
    assert [r["name"] for r in document["resources"]] == [
        "ska-sdp.org/snaffler-v1", "ska-sdp.org/snaffler-v2",
    ]  # fmt: skip
    assert document["resources"][1]["devices"] == [
        {"id": "snaffler-v2-wibble3", "path": "/dev/wibble3", "health": "Healthy"}
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "x.yml", "--metrics-address", "nope"], "is not HOST:PORT"),
        (["run", "--config", "x.yml", "--domain", "Bad_Domain"], "must consist of lower case"),
        (["run", "--config", "x.yml", "--log-format", "xml"], "'xml' is not one of"),
        (["run"], "Missing option '--config'"),
        (["kubelet", "--plugin-dir", "/tmp", "--allocate", "a/b=x"], "COUNT must be a number"),
    ],
    ids=["address", "domain", "log-format", "no-config", "allocate-count"],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    code, output = invoke(*args)
    assert code == 2
    assert message in output


def test_run_with_a_missing_config_exits_1(tmp_path: Path) -> None:
    code, output = invoke("run", "--config", str(tmp_path / "none.yml"), "--plugin-dir",
                          str(tmp_path / "dp"), "--metrics-address", "127.0.0.1:0")  # fmt: skip
    assert code == 1
    assert "file does not exist" in output


def test_run_with_a_taken_metrics_port_exits_3(tmp_path: Path, examples: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = invoke("run", "--config", str(examples / "widget.yml"), "--plugin-dir",
                              str(tmp_path / "dp"), "--metrics-address", f"127.0.0.1:{port}")  # fmt: skip
    assert code == 3
    assert f"cannot listen on 127.0.0.1:{port}" in output


@pytest.mark.slow
def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "demo", "--duration", "0.5",
         "--metrics-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ["snaffler-v1", "snaffler-v2", "gizmo-mk2", "doohickey-a100"]:
        assert f"ska-sdp.org/{name}" in out
        assert f"allocated from ska-sdp.org/{name}:" in out
    assert "env WIDGET_GIZMO_MK2_VISIBLE_DEVICES=/dev/gizmo0" in out
    assert "metrics: http://127.0.0.1:" in out
    assert re.search(
        r"health: http://127.0.0.1:\d+/healthz +ready: http://127.0.0.1:\d+/readyz", out
    )


FOUR = ["ska-sdp.org/doohickey-a100", "ska-sdp.org/gizmo-mk2", "ska-sdp.org/snaffler-v1",
        "ska-sdp.org/snaffler-v2"]  # fmt: skip
GIZMO_ALLOCATED = "env WIDGET_GIZMO_MK2_VISIBLE_DEVICES=/dev/gizmo0,/dev/gizmo1"


def connected_in_last_table(output: str) -> list[str]:
    """The resources the stand-in's newest table shows connected."""
    if "RESOURCE" not in output:
        return []
    rows = output.rsplit("RESOURCE", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return sorted(row.split()[0] for row in rows if row.split()[4:5] == ["connected"])


@pytest.mark.slow
def test_kubelet_stand_in_command_serves_a_real_supervisor(tmp_path: Path, examples: Path) -> None:
    """The README's two-terminal walk-through, as two real processes."""
    import tempfile

    plugin_dir = Path(tempfile.mkdtemp(prefix="wdp-", dir="/tmp")) / "dp"
    kubelet = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "kubelet", "--plugin-dir", str(plugin_dir),
         "--allocate", "ska-sdp.org/gizmo-mk2=2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    stream = kubelet.stdout
    assert stream is not None
    lines: list[str] = []  # the stand-in's output so far, read as it comes
    reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")))
    reader.start()
    supervisor = None
    try:
        wait_until((plugin_dir / "kubelet.sock").exists, timeout=20, what="kubelet.sock served")
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--config", str(examples / "multi.yml"),
             "--plugin-dir", str(plugin_dir), "--metrics-address", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Registration, ListAndWatch and the allocation follow at once: the stand-in prints
        # the allocation and a table with all four resources connected.
        wait_until(
            lambda: (
                GIZMO_ALLOCATED in "".join(lines)
                and connected_in_last_table("".join(lines)) == FOUR
            ),
            timeout=20,
            what=lambda: f"the allocation and four connected resources; output:\n{''.join(lines)}",
        )
    finally:
        try:
            if supervisor is not None:
                supervisor.send_signal(signal.SIGTERM)
                assert supervisor.wait(timeout=10) == 0
        finally:
            # Always stop the stand-in: its end closes the pipe, which ends the reader.
            kubelet.send_signal(signal.SIGINT)
            try:
                kubelet.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kubelet.kill()
                kubelet.wait()
            reader.join()
            stream.close()
            shutil.rmtree(plugin_dir.parent, ignore_errors=True)
    output = "".join(lines)
    assert kubelet.returncode == 0, output
    assert "allocated from ska-sdp.org/gizmo-mk2:" in output
    assert GIZMO_ALLOCATED in output
    final_table = output.rsplit("RESOURCE", 1)[1]
    assert "ska-sdp.org/snaffler-v1" in final_table
    assert "Traceback" not in output


@pytest.mark.slow
def test_dra_demo_shows_slices_a_prepared_claim_and_its_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "demo", "--api", "dra", "--duration", "0.5",
         "--metrics-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"demo-node-ska-sdp\.org-\w+ +1 +snaffler-v1-wibble1 +cores=128", out), out
    assert "gizmo-mk2-gizmo0" in out
    assert "shares 2" in out
    assert re.search(r"claim demo/snaffler-v1: .* CDI ska-sdp\.org/claim=[-0-9a-f]+-0", out), out
    assert "  env WIDGET_VISIBLE_DEVICES=/dev/wibble0" in out
    assert "Traceback" not in result.stderr


def test_dra_demo_refuses_a_config_without_dra(examples: Path) -> None:
    code, output = invoke("demo", "--api", "dra", "--config", str(examples / "widget.yml"))
    assert code == 1
    assert "no resource of" in output
    assert "add `api: dra`" in output
