"""The real `widget-supervisor run` process against the kubelet stand-in, over real sockets."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import grpc
import pytest

from kubelet_standin import KubeletStandIn
from tests.support import SupervisorProcess, eventually, http_get, sample, sockets_in, write_config

pytestmark = pytest.mark.slow

V1 = "ska-sdp.org/snaffler-v1"
V2 = "ska-sdp.org/snaffler-v2"


@pytest.fixture
def seed_config(short_tmp: Path, examples: Path) -> Path:
    config = short_tmp / "config" / "widget.yml"
    config.parent.mkdir()
    shutil.copy(examples / "widget.yml", config)
    return config


async def test_seed_widget_yml_end_to_end(
    seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        assert kubelet.plugins[V1].devices == {
            "snaffler-v1-wibble1": "Healthy",
            "snaffler-v1-wibble2": "Healthy",
        }
        assert kubelet.plugins[V2].devices == {"snaffler-v2-wibble3": "Healthy"}
        assert not kubelet.plugins[V1].options.pre_start_required

        response = await kubelet.allocate(V1, count=2)
        assert (
            response.envs["WIDGET_VISIBLE_DEVICE_IDS"] == "snaffler-v1-wibble1,snaffler-v1-wibble2"
        )
        assert response.envs["WIDGET_VISIBLE_DEVICES"] == "/dev/wibble1,/dev/wibble2"
        assert response.envs["WIDGET_SNAFFLER_V1_VISIBLE_DEVICES"] == "/dev/wibble1,/dev/wibble2"
        assert list(response.devices) == []  # /dev/wibble* are not device nodes

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kubelet.allocate(V2, device_ids=["snaffler-v2-nope"])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "snaffler-v2-nope" in (refused.value.details() or "")
        await kubelet.allocate(V2, count=1)

        metrics = supervisor.metrics()
        assert sample(metrics, "widget_allocations_total", resource=V1) == 1
        assert sample(metrics, "widget_allocated_devices_total", resource=V1) == 2
        assert sample(metrics, "widget_allocations_total", resource=V2) == 1
        assert sample(metrics, "widget_allocated_devices_total", resource=V2) == 1
        assert (
            sample(metrics, "widget_allocation_errors_total", resource=V2, reason="unknown_device")
            == 1
        )
        assert sample(metrics, "widget_allocate_duration_seconds_count", resource=V1) == 1
        assert sample(metrics, "widget_allocate_duration_seconds_count", resource=V2) == 2
        assert sample(metrics, "widget_devices", resource=V1, health="Healthy") == 2
        assert sample(metrics, "widget_devices", resource=V1, health="Unhealthy") == 0
        assert sample(metrics, "widget_plugin_registered", resource=V1) == 1
        assert sample(metrics, "widget_registrations_total", resource=V2) == 1
        assert sample(metrics, "widget_config_reloads_total", result="success") == 0
    finally:
        code = await supervisor.stop()
    assert code == 0
    assert sockets_in(plugin_dir) == {"kubelet.sock"}


async def test_socket_files_are_private(
    seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        for name in sockets_in(plugin_dir) - {"kubelet.sock"}:
            assert (plugin_dir / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        await supervisor.stop()


async def test_kubelet_absent_at_start_then_appearing(seed_config: Path, plugin_dir: Path) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    kubelet = KubeletStandIn(plugin_dir)
    try:
        await supervisor.wait_for_log("waiting for kubelet")
        await supervisor.wait_for_log(r"started .*: \+2 resources")
        assert sample(supervisor.metrics(), "widget_plugin_registered", resource=V1) == 0
        await kubelet.start()
        await kubelet.wait_registered([V1, V2], timeout=2)
        assert sample(supervisor.metrics(), "widget_plugin_registered", resource=V1) == 1
    finally:
        await supervisor.stop()
        await kubelet.stop()


async def test_kubelet_restarts_five_times(
    seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        for _ in range(5):
            await kubelet.restart()  # deletes our sockets, then recreates kubelet.sock
            await kubelet.wait_registered([V1, V2], timeout=2)
            await kubelet.allocate(V1, count=1)
            kubelet.release(V1, list(kubelet.plugins[V1].allocated))
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_registrations_total", resource=V1) == 6
        assert sample(metrics, "widget_allocations_total", resource=V1) == 5
        await supervisor.wait_for_log("kubelet \\(re\\)started")
    finally:
        assert await supervisor.stop() == 0


async def test_our_socket_deleted_by_someone_is_recreated(
    seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        endpoint = kubelet.plugins[V1].endpoint
        first = kubelet.plugins[V1].registered_at
        (plugin_dir / endpoint).unlink()
        await kubelet.wait_for(lambda k: k.plugins[V1].registered_at > first)
        await kubelet.wait_registered([V1])
        assert (plugin_dir / endpoint).exists()
        await kubelet.allocate(V1, count=1)
    finally:
        await supervisor.stop()


async def test_sigterm_removes_only_our_sockets_and_exits_0(
    seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    await kubelet.wait_registered([V1, V2])
    assert len(sockets_in(plugin_dir)) == 3
    supervisor.signal(signal.SIGTERM)
    assert await supervisor.wait(timeout=5) == 0
    assert sockets_in(plugin_dir) == {"kubelet.sock"}
    assert not any(p.connected for p in kubelet.plugins.values())


async def test_invalid_config_at_start_exits_1_with_location(
    short_tmp: Path, plugin_dir: Path
) -> None:
    config = short_tmp / "bad.yml"
    config.write_text("devices:\n- type: snaffler\n  device: /dev/x\n")
    supervisor = await SupervisorProcess(config, plugin_dir).start(wait_for_metrics=False)
    assert await supervisor.wait() == 1
    assert f"{config}:2: devices[0].model: required field is missing" in supervisor.output
    assert "Traceback" not in supervisor.output


# -- reload ------------------------------------------------------------------------

BEFORE = [
    ("snaffler", "v1", "/dev/wibble1"),
    ("snaffler", "v1", "/dev/wibble2"),
    ("snaffler", "v2", "/dev/wibble3"),
    ("gizmo", "mk2", "/dev/gizmo0"),
]
AFTER = [  # v1 unchanged (reordered), v2 gains a device, gizmo removed, doohickey added
    ("snaffler", "v1", "/dev/wibble2"),
    ("snaffler", "v1", "/dev/wibble1"),
    ("snaffler", "v2", "/dev/wibble3"),
    ("snaffler", "v2", "/dev/wibble9"),
    ("doohickey", "a100", "/dev/doohickey0"),
]
GIZMO = "ska-sdp.org/gizmo-mk2"
DOOHICKEY = "ska-sdp.org/doohickey-a100"


def _in_place(config_dir: Path, devices: list[tuple[str, str, str]]) -> Path:
    write_config(config_dir / "config.yaml", devices)
    return config_dir / "config.yaml"


def _rename(config_dir: Path, devices: list[tuple[str, str, str]]) -> Path:
    target = config_dir / "config.yaml"
    temporary = config_dir / ".config.yaml.tmp"
    write_config(temporary, devices)
    os.rename(temporary, target)
    return target


def _configmap(config_dir: Path, devices: list[tuple[str, str, str]]) -> Path:
    """What kubelet does to a ConfigMap volume: new timestamped dir, swap ..data."""
    stamp = f"..{len(list(config_dir.glob('..2*'))) + 2026}_{os.getpid()}"
    (config_dir / stamp).mkdir()
    write_config(config_dir / stamp / "config.yaml", devices)
    old = os.readlink(config_dir / "..data") if (config_dir / "..data").is_symlink() else None
    os.symlink(stamp, config_dir / "..data_tmp")
    os.rename(config_dir / "..data_tmp", config_dir / "..data")
    if not (config_dir / "config.yaml").is_symlink():
        os.symlink("..data/config.yaml", config_dir / "config.yaml")
    if old is not None:
        shutil.rmtree(config_dir / old)
    return config_dir / "config.yaml"


@pytest.mark.parametrize(
    "write", [_in_place, _rename, _configmap], ids=["in-place", "rename", "configmap"]
)
async def test_reload_styles(
    write: object, short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    assert callable(write)
    config_dir = short_tmp / "etc"
    config_dir.mkdir()
    config = write(config_dir, BEFORE)
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2, GIZMO])
        v1_registered_at = kubelet.plugins[V1].registered_at
        v1_updates = kubelet.plugins[V1].updates
        gizmo_socket = kubelet.plugins[GIZMO].endpoint

        write(config_dir, AFTER)
        await kubelet.wait_registered([DOOHICKEY])
        await kubelet.wait_for(lambda k: len(k.plugins[V2].devices) == 2)
        await kubelet.wait_for(lambda k: not k.plugins[GIZMO].connected)
        await supervisor.wait_for_log(
            r"reloaded .*\+1 resource, -1 resource, 1 updated, 1 unchanged"
        )

        assert gizmo_socket not in sockets_in(plugin_dir)
        assert kubelet.plugins[V1].registered_at == v1_registered_at  # not restarted
        assert kubelet.plugins[V1].updates == v1_updates  # reordering changed nothing
        assert kubelet.plugins[V1].connected
        assert set(kubelet.plugins[V2].devices) == {"snaffler-v2-wibble3", "snaffler-v2-wibble9"}
        response = await kubelet.allocate(V2, device_ids=["snaffler-v2-wibble9"])
        assert response.envs["WIDGET_VISIBLE_DEVICES"] == "/dev/wibble9"
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_config_reloads_total", result="success") == 1
        assert sample(metrics, "widget_plugin_registered", resource=GIZMO) is None
        assert sample(metrics, "widget_allocations_total", resource=GIZMO) is None
    finally:
        assert await supervisor.stop() == 0


async def test_invalid_reload_keeps_last_good_config(
    seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        seed_config.write_text("devices:\n- type: snaffler\n  model: [v1]\n  device: /dev/x\n")
        await supervisor.wait_for_log("rejected config")
        await supervisor.wait_for_log(r"widget\.yml:3: devices\[0\]\.model: must be a non-empty")
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_config_reloads_total", result="failure") == 1
        assert sample(metrics, "widget_config_last_reload_successful") == 0
        await kubelet.allocate(V1, count=1)  # still serving the old config
        assert all(p.connected for p in kubelet.plugins.values())

        seed_config.unlink()  # a vanished file is rejected too, and serving goes on
        await supervisor.wait_for_log("file does not exist")
        await kubelet.allocate(V2, count=1)

        write_config(seed_config, [("snaffler", "v1", "/dev/wibble1")])
        await kubelet.wait_for(lambda k: not k.plugins[V2].connected)
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_config_reloads_total", result="success") == 1
        assert sample(metrics, "widget_config_last_reload_successful") == 1
    finally:
        assert await supervisor.stop() == 0


async def test_sighup_reloads(seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        mark = len(supervisor.lines)
        supervisor.signal(signal.SIGHUP)
        await supervisor.wait_for_log(r"reloaded .*: 2 unchanged", after=mark)
        assert kubelet.plugins[V1].updates == 1
        assert sample(supervisor.metrics(), "widget_config_reloads_total", result="success") == 1
    finally:
        assert await supervisor.stop() == 0


async def test_healthz(seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn) -> None:
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        answer = http_get(supervisor.metrics_url + "/healthz")
        assert answer.status == 200, answer
        assert answer.text.startswith("ok: 2 resources served")
    finally:
        await supervisor.stop()


async def test_config_directory_deleted_and_recreated(
    short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    config_dir = short_tmp / "etc" / "widget"
    config_dir.mkdir(parents=True)
    config = config_dir / "config.yaml"
    write_config(config, BEFORE[:2])
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1])
        shutil.rmtree(config_dir)
        await supervisor.wait_for_log("file does not exist")
        await kubelet.allocate(V1, count=1)  # the last good config keeps serving
        config_dir.mkdir()
        write_config(config, [*BEFORE[:2], ("gizmo", "mk2", "/dev/gizmo0")])
        await kubelet.wait_registered([GIZMO])  # picked up without SIGHUP
        assert sample(supervisor.metrics(), "widget_config_last_reload_successful") == 1
    finally:
        assert await supervisor.stop() == 0


async def test_the_parser_child_ends_with_the_supervisor_even_when_killed(
    seed_config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    """A forked child inherits the supervisor's end of their pipe: unless it closes it, a
    SIGKILLed supervisor left the child waiting forever (and holding the supervisor's
    stdout open, which hung whoever read it)."""
    supervisor = await SupervisorProcess(seed_config, plugin_dir).start()
    assert supervisor.process is not None
    pid = supervisor.process.pid
    # Children are listed by the thread that forked them (the parse runs in a thread).
    tasks = Path(f"/proc/{pid}/task").iterdir()
    children = [c for t in tasks for c in (t / "children").read_text().split()]
    assert children, "the parser child runs"
    supervisor.signal(signal.SIGKILL)
    await supervisor.wait()  # it returns only once every holder of the pipe has closed it
    await eventually(lambda: not any(Path(f"/proc/{c}").exists() for c in children),
                     timeout=5, what="the parser child gone")  # fmt: skip
