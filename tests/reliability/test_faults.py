"""Things going wrong around a running supervisor: a second instance, files vanishing,
a hung kubelet, a taken metrics port, planted symlinks. Real processes, real sockets."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from kubelet_standin import KubeletStandIn
from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from plugin_worker.api import KUBELET_SOCKET, socket_name_for
from tests.reliability.conftest import STAY, V1, V2, replace_config
from tests.support import SupervisorProcess, sample, sockets_in, write_config

pytestmark = pytest.mark.slow


async def _allocate_direct(socket_path: Path, device_id: str) -> pb.AllocateResponse:
    """Allocate on a plugin socket without kubelet (proves the server itself serves)."""
    async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
        request = pb.AllocateRequest(
            container_requests=[pb.ContainerAllocateRequest(devices_ids=[device_id])]
        )
        response: pb.AllocateResponse = await pb_grpc.DevicePluginStub(channel).Allocate(
            request, timeout=5
        )
        return response


def _inodes(plugin_dir: Path) -> dict[str, int]:
    return {name: os.lstat(plugin_dir / name).st_ino for name in sockets_in(plugin_dir)}


# -- two instances -----------------------------------------------------------------


async def test_second_instance_leaves_the_first_ones_sockets_alone_then_takes_over(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    first = await SupervisorProcess(config, plugin_dir).start()
    second = SupervisorProcess(config, plugin_dir)
    try:
        await kubelet.wait_registered([V1, V2])
        before = _inodes(plugin_dir)
        registered_at = kubelet.plugins[V1].registered_at
        assert first.process is not None

        await second.start()
        line = await second.wait_for_log(
            f"{V1}.* served by another process: pid {first.process.pid}"
        )
        assert "widget-supervisor" in line or "supervisor run" in line, line
        await second.wait_for_log(f"{V2}.* served by another process")
        await second.wait_for_log(r"started .*: \+2 resources")
        assert _inodes(plugin_dir) == before  # nothing deleted or replaced
        assert kubelet.plugins[V1].registered_at == registered_at
        assert all(p.connected for p in kubelet.plugins.values())
        await kubelet.allocate(V1, count=1)
        assert sample(first.metrics(), "widget_allocations_total", resource=V1) == 1
        assert sample(second.metrics(), "widget_plugin_registered", resource=V1) == 0

        # The first one goes away (a DaemonSet rollout): the second takes over at once.
        assert await first.stop() == 0
        await second.wait_for_log(f"{V1}.* socket path is free now; starting")
        await kubelet.wait_for(lambda k: k.plugins[V1].registered_at > registered_at)
        await kubelet.wait_registered([V1, V2])
        await kubelet.allocate(V2, count=1)
        assert sample(second.metrics(), "widget_allocations_total", resource=V2) == 1
    finally:
        await first.stop()
        assert await second.stop() == 0
    assert sockets_in(plugin_dir) == {KUBELET_SOCKET}


# -- things vanishing ----------------------------------------------------------------


async def test_socket_deleted_again_and_again_is_recreated_each_time(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        for _ in range(10):
            endpoint = plugin_dir / kubelet.plugins[V1].endpoint
            previous = kubelet.plugins[V1].registered_at
            endpoint.unlink()

            def registered_again(k: KubeletStandIn, p: float = previous) -> bool:
                return k.plugins[V1].registered_at > p

            await kubelet.wait_for(registered_again)
            await kubelet.wait_registered([V1])
            await kubelet.allocate(V1, count=1)
            kubelet.release(V1, list(kubelet.plugins[V1].allocated))
        assert stat.S_IMODE(os.lstat(endpoint).st_mode) == 0o600
        assert sample(supervisor.metrics(), "widget_registrations_total", resource=V1) == 11
        assert sample(supervisor.metrics(), "widget_registrations_total", resource=V2) == 1
    finally:
        assert await supervisor.stop() == 0


async def test_plugin_dir_deleted_and_recreated(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    replacement = KubeletStandIn(plugin_dir)
    try:
        await kubelet.wait_registered([V1, V2])
        await kubelet.stop()
        shutil.rmtree(plugin_dir)
        await supervisor.wait_for_log("plugin dir .* was removed")
        # Give the workers a chance to notice their sockets are gone while the dir is.
        mark = len(supervisor.lines)
        supervisor.signal(signal.SIGHUP)
        await supervisor.wait_for_log("reloaded", after=mark)
        plugin_dir.mkdir()
        await replacement.start()
        await replacement.wait_registered([V1, V2], timeout=15)
        await replacement.allocate(V1, count=1)
        await replacement.allocate(V2, count=1)
        assert sockets_in(plugin_dir) == {
            KUBELET_SOCKET,
            socket_name_for(V1, str(plugin_dir)),
            socket_name_for(V2, str(plugin_dir)),
        }
        assert "registration loop crashed" not in supervisor.output
    finally:
        code = await supervisor.stop()
        print(supervisor.output)
        await replacement.stop()
        assert code == 0


async def test_config_deleted_keeps_serving_and_returns(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        config.unlink()
        await supervisor.wait_for_log("rejected config .*; still serving the last good config")
        await supervisor.wait_for_log("file does not exist")
        mark = len(supervisor.lines)
        supervisor.signal(signal.SIGHUP)  # a reload while it is missing changes nothing
        await supervisor.wait_for_log("SIGHUP received", after=mark)
        await kubelet.allocate(V1, count=1)
        await kubelet.allocate(V2, count=1)
        assert all(p.connected for p in kubelet.plugins.values())
        assert sample(supervisor.metrics(), "widget_config_last_reload_successful") == 0

        replace_config(config, [*STAY, ("gizmo", "mk2", "/dev/gizmo0")])
        await kubelet.wait_registered(["ska-sdp.org/gizmo-mk2"])
        assert sample(supervisor.metrics(), "widget_config_last_reload_successful") == 1
    finally:
        assert await supervisor.stop() == 0


async def test_metrics_port_taken_exits_3_and_leaves_no_socket(
    config: Path, plugin_dir: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        supervisor = SupervisorProcess(config, plugin_dir, "--metrics-address", f"127.0.0.1:{port}")
        await supervisor.start(wait_for_metrics=False)
        assert await supervisor.wait() == 3
    assert f"cannot listen on 127.0.0.1:{port}" in supervisor.output
    assert "choose another --metrics-address" in supervisor.output
    assert "Traceback" not in supervisor.output
    assert sockets_in(plugin_dir) == set()


class _HungRegistration(pb_grpc.RegistrationServicer):
    """A kubelet that accepts Register and never answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def Register(
        self,
        request: pb.RegisterRequest,
        context: grpc.aio.ServicerContext[pb.RegisterRequest, pb.Empty],
    ) -> pb.Empty:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
async def hung_kubelet(plugin_dir: Path) -> AsyncIterator[_HungRegistration]:
    plugin_dir.mkdir(parents=True, exist_ok=True)
    servicer = _HungRegistration()
    server = grpc.aio.server()
    pb_grpc.add_RegistrationServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{plugin_dir / KUBELET_SOCKET}")
    await server.start()
    yield servicer
    await server.stop(0)


async def test_kubelet_that_never_answers_register_times_out_and_is_retried(
    config: Path, plugin_dir: Path, hung_kubelet: _HungRegistration
) -> None:
    supervisor = SupervisorProcess(config, plugin_dir, "--register-timeout", "0.5")
    await supervisor.start()
    try:
        pattern = f"{V1}.* did not answer registration \\(DEADLINE_EXCEEDED"
        first = await supervisor.wait_for_log(pattern)
        await supervisor.wait_for_log(pattern, after=supervisor.lines.index(first) + 1)
        assert hung_kubelet.calls >= 4  # both resources, at least twice each
        # Serving does not depend on registering.
        await _allocate_direct(
            plugin_dir / socket_name_for(V1, str(plugin_dir)), "snaffler-v1-wibble1"
        )
        assert sample(supervisor.metrics(), "widget_plugin_registered", resource=V1) == 0
    finally:
        assert await supervisor.stop() == 0


async def test_kubelet_socket_that_accepts_and_never_speaks(config: Path, plugin_dir: Path) -> None:
    plugin_dir.mkdir(parents=True)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(plugin_dir / KUBELET_SOCKET))
    silent.listen(64)  # the kernel accepts; nobody ever reads or writes
    supervisor = SupervisorProcess(config, plugin_dir, "--register-timeout", "0.5")
    await supervisor.start()
    real = KubeletStandIn(plugin_dir)
    try:
        await supervisor.wait_for_log(f"{V1}.* did not answer registration")
        silent.close()
        await real.start()  # replaces kubelet.sock, as a kubelet restart does
        await real.wait_registered([V1, V2], timeout=15)
        await real.allocate(V1, count=1)
    finally:
        silent.close()
        assert await supervisor.stop() == 0
        await real.stop()


def test_default_register_timeout_is_above_kubelets_dial_timeout() -> None:
    from kubelet_standin.kubelet import DIAL_TIMEOUT
    from plugin_worker.worker import REGISTER_TIMEOUT

    assert REGISTER_TIMEOUT > DIAL_TIMEOUT
    help_text = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "--register-timeout" in help_text
    assert "WIDGET_REGISTER_TIMEOUT" in help_text


# -- security ------------------------------------------------------------------------


async def test_planted_symlink_at_our_socket_name_is_never_followed(
    config: Path, short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    victim = short_tmp / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    link = plugin_dir / socket_name_for(V1, str(plugin_dir))
    link.symlink_to(victim)
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V2])
        line = await supervisor.wait_for_log(f"\\[{V1}\\] cannot serve")
        assert "is not a socket; refusing to replace it" in line
        assert link.is_symlink()
        assert V1 not in kubelet.plugins
    finally:
        assert await supervisor.stop() == 0
    assert link.is_symlink()
    assert os.readlink(link) == str(victim)
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


async def test_symlink_renamed_over_our_live_socket(
    config: Path, short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    """Someone atomically replaces our socket with a symlink to a file of theirs: we must
    not chmod, delete or serve through it; when they remove it, we serve again."""
    victim = short_tmp / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        ours = plugin_dir / kubelet.plugins[V1].endpoint
        planted = plugin_dir / "planted"
        planted.symlink_to(victim)
        os.rename(planted, ours)
        await supervisor.wait_for_log(f"\\[{V1}\\] cannot serve: .* is not a socket")
        assert ours.is_symlink()
        assert stat.S_IMODE(victim.stat().st_mode) == 0o644

        previous = kubelet.plugins[V1].registered_at
        ours.unlink()
        await kubelet.wait_for(lambda k: k.plugins[V1].registered_at > previous)
        await kubelet.wait_registered([V1])
        await kubelet.allocate(V1, count=1)
    finally:
        assert await supervisor.stop() == 0
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert sockets_in(plugin_dir) == {KUBELET_SOCKET}


async def test_foreign_socket_renamed_over_ours_is_not_deleted_at_exit(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    foreign = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await kubelet.wait_registered([V1, V2])
        ours = plugin_dir / kubelet.plugins[V1].endpoint
        foreign.bind(str(plugin_dir / "foreign.sock"))
        foreign.listen()
        os.rename(plugin_dir / "foreign.sock", ours)
        await supervisor.wait_for_log(
            f"\\[{V1}\\] cannot serve: .* served by another process: pid {os.getpid()}"
        )
    finally:
        assert await supervisor.stop() == 0
        foreign.close()
    assert (plugin_dir / socket_name_for(V1, str(plugin_dir))).exists()  # theirs, kept
    assert not (plugin_dir / socket_name_for(V2, str(plugin_dir))).exists()  # ours, removed


@pytest.mark.parametrize(
    ("mode", "message"),
    [(0o664, "is writable by group or others"), (0o646, "is writable by group or others")],
    ids=["group-writable", "world-writable"],
)
async def test_config_permission_check(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn, mode: int, message: str
) -> None:
    os.chmod(config, mode)
    refused = SupervisorProcess(config, plugin_dir)
    await refused.start(wait_for_metrics=False)
    assert await refused.wait() == 1
    assert message in refused.output

    os.chmod(config, 0o644)
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        os.chmod(config, mode)  # a chmod alone is a change: checked and refused
        await supervisor.wait_for_log(message)
        assert sample(supervisor.metrics(), "widget_config_last_reload_successful") == 0
        await kubelet.allocate(V1, count=1)
    finally:
        assert await supervisor.stop() == 0


@pytest.mark.root  # chowns the file to another user
async def test_config_owned_by_another_user_is_refused(config: Path, plugin_dir: Path) -> None:
    os.chown(config, 65534, 65534)
    refused = SupervisorProcess(config, plugin_dir)
    await refused.start(wait_for_metrics=False)
    assert await refused.wait() == 1
    assert "is owned by uid 65534, neither root nor this user" in refused.output


async def test_metrics_expose_no_config_contents_or_paths(
    short_tmp: Path, config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    secret_path = "/dev/secret-host-path-xyz"
    write_config(config, [*STAY, ("gizmo", "mk2", secret_path)])
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2, "ska-sdp.org/gizmo-mk2"])
        await kubelet.allocate("ska-sdp.org/gizmo-mk2", count=1)
        scrape = supervisor.metrics()
        assert "widget_allocations_total" in scrape  # the scrape is real
        for leak in (secret_path, "/dev/wibble", str(short_tmp), str(config), "device-plugins",
                     ".sock", "config.yaml"):  # fmt: skip
            assert leak not in scrape, leak
    finally:
        assert await supervisor.stop() == 0


def _why_nobody_cannot_run_python() -> str:
    """Empty if user nobody can run this interpreter with the project importable."""
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", "import supervisor, grpc"],
        capture_output=True, text=True, check=False, cwd="/",
    )  # fmt: skip
    return (
        "" if probe.returncode == 0 else f"user nobody cannot run {sys.executable}: {probe.stderr}"
    )


@pytest.mark.root  # becomes user nobody through setpriv
async def test_runs_as_nobody_on_a_plugin_dir_it_owns(
    short_tmp: Path, config: Path, plugin_dir: Path
) -> None:
    why = _why_nobody_cannot_run_python()
    if why:
        pytest.skip(why)  # a failure under CI=true, where root must be able to do this
    os.chmod(short_tmp, 0o755)
    os.chmod(config.parent, 0o755)
    plugin_dir.mkdir()
    os.chown(plugin_dir, 65534, 65534)
    kubelet = KubeletStandIn(plugin_dir)  # root, like kubelet
    await kubelet.start()
    # kubelet's socket is root's and 0755 on a stock node: a non-root plugin can only
    # register where the host grants it write access (an ACL, a group); grant it here.
    os.chmod(kubelet.socket_path, 0o666)
    supervisor = SupervisorProcess(config, plugin_dir)
    supervisor.args[:0] = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    await supervisor.start()
    try:
        try:
            await kubelet.wait_registered([V1, V2], timeout=15)
        except TimeoutError:
            raise AssertionError(f"not registered; log:\n{supervisor.output}") from None
        await kubelet.allocate(V1, count=1)
        for name in sockets_in(plugin_dir) - {KUBELET_SOCKET}:
            st = os.lstat(plugin_dir / name)
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, 0o600), name
    finally:
        assert await supervisor.stop() == 0
        await kubelet.stop()
    assert sockets_in(plugin_dir) == set()
