"""The DRA kubelet plugin against the kubelet stand-in, over real unix sockets.

A fake `Driver` (our own interface) records what the plugin asks of it; the stand-in is
kubelet's plugin watcher and DRA manager. Raw stubs check what goes over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from dra_driver._proto import dra_health_v1alpha1_pb2, dra_v1_pb2, dra_v1beta1_pb2
from dra_driver._proto import pluginregistration_v1_pb2 as reg_pb
from dra_driver._proto import pluginregistration_v1_pb2_grpc as reg_grpc
from dra_driver.kubelet_plugin import (
    ClaimRef,
    DeviceHealth,
    KubeletPlugin,
    PreparedDevice,
    PrepareResult,
)
from kubelet_standin.dra import KUBELET_SERVICES, DraPluginWatcher
from plugin_worker._proto import deviceplugin_pb2, podresources_pb2
from tests.support import WAIT, eventually

DRIVER = "widget.example.com"
POOL = "node-a"
CLAIM = ("default", "claim-a", "uid-a")
OTHER = ("default", "claim-b", "uid-b")
ALL_SERVICES = ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth"]


def device(name: str, *requests: str) -> PreparedDevice:
    return PreparedDevice(
        pool=POOL, device=name, requests=requests, cdi_device_ids=(f"example.com/widget={name}",)
    )


def healthy(name: str, health: str = "Healthy", message: str = "") -> DeviceHealth:
    return DeviceHealth(
        pool=POOL, device=name, health=health, last_updated=1_700_000_000.5, message=message
    )


class FakeDriver:
    """Prepares every claim with device widget-0 unless told otherwise; reports health from
    `snapshot`, then whatever is put on `reports` (None ends the stream)."""

    def __init__(self) -> None:
        self.prepared: list[list[ClaimRef]] = []
        self.unprepared: list[list[ClaimRef]] = []
        self.results: dict[str, PrepareResult] = {}
        self.unprepare_errors: dict[str, str] = {}
        self.failure: Exception | None = None
        self.snapshot: list[DeviceHealth] = [healthy("widget-0"), healthy("widget-1")]
        self.reports: asyncio.Queue[Sequence[DeviceHealth] | None] = asyncio.Queue()
        self.health_supported = True
        self.watches = 0
        self.busy = 0
        self.most_busy = 0
        self.slow = 0.0

    async def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        self.prepared.append(list(claims))
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            await asyncio.sleep(self.slow)  # a driver taking its time, not a wait in the test
            if self.failure is not None:
                raise self.failure
            default = PrepareResult(devices=(device("widget-0", "gpu/small"),))
            return {c.uid: self.results.get(c.uid, default) for c in claims}
        finally:
            self.busy -= 1

    async def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        self.unprepared.append(list(claims))
        if self.failure is not None:
            raise self.failure
        return {c.uid: self.unprepare_errors.get(c.uid, "") for c in claims}

    async def health(self) -> AsyncIterator[Sequence[DeviceHealth]]:
        self.watches += 1
        if not self.health_supported:
            raise NotImplementedError
        yield self.snapshot
        while (report := await self.reports.get()) is not None:
            yield report


@pytest.fixture
def root(short_tmp: Path) -> Path:
    return short_tmp / "kubelet"


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def statuses() -> list[tuple[bool, str]]:
    return []


@pytest.fixture
async def plugin(
    root: Path, driver: FakeDriver, statuses: list[tuple[bool, str]]
) -> AsyncIterator[KubeletPlugin]:
    instance = KubeletPlugin(
        DRIVER, root, driver, on_registered=lambda ok, error: statuses.append((ok, error))
    )
    await instance.start()
    yield instance
    await instance.stop()


@contextlib.asynccontextmanager
async def watching(
    root: Path, services: Sequence[str] = KUBELET_SERVICES, health_timeout: float = 30
) -> AsyncIterator[DraPluginWatcher]:
    """The stand-in, retrying fast: registration every 0.1 s, health streams after 0.05 s."""
    watcher = DraPluginWatcher(
        root,
        services=services,
        reconcile_period=0.1,
        health_retry=0.05,
        health_timeout=health_timeout,
    )
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


@pytest.fixture
async def kubelet(root: Path, plugin: KubeletPlugin) -> AsyncIterator[DraPluginWatcher]:
    async with watching(root) as watcher:
        await watcher.wait_registered(DRIVER, WAIT)
        yield watcher


@contextlib.asynccontextmanager
async def registration_stub(path: Path) -> AsyncIterator[reg_grpc.RegistrationAsyncStub]:
    async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
        yield reg_grpc.RegistrationStub(channel)


# -- the protos ------------------------------------------------------------------------


def test_protos_share_one_process() -> None:
    services = {
        dra_v1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name,
        dra_v1beta1_pb2.DESCRIPTOR.services_by_name["DRAPlugin"].full_name,
        dra_health_v1alpha1_pb2.DESCRIPTOR.services_by_name["DRAResourceHealth"].full_name,
        reg_pb.DESCRIPTOR.services_by_name["Registration"].full_name,
        deviceplugin_pb2.DESCRIPTOR.services_by_name["Registration"].full_name,
        podresources_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"].full_name,
    }
    assert services == {
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin",
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin",
        "v1alpha1.DRAResourceHealth",
        "pluginregistration.Registration",
        "v1beta1.Registration",
        "v1.PodResourcesLister",
    }


# -- registration ----------------------------------------------------------------------


async def test_registration_answers_upstreams_plugin_info(
    root: Path, kubelet: DraPluginWatcher, plugin: KubeletPlugin, statuses: list[tuple[bool, str]]
) -> None:
    assert plugin.registration_socket == root / "plugins_registry" / f"{DRIVER}-reg.sock"
    assert plugin.service_socket == root / "plugins" / DRIVER / "dra.sock"
    async with registration_stub(plugin.registration_socket) as stub:
        info = await stub.GetInfo(reg_pb.InfoRequest(), timeout=5)
    assert (info.type, info.name, info.endpoint) == (
        "DRAPlugin",
        DRIVER,
        str(plugin.service_socket),
    )
    assert list(info.supported_versions) == ALL_SERVICES
    await eventually(lambda: plugin.registered, what="NotifyRegistrationStatus(True) received")
    assert statuses == [(True, "")]
    assert kubelet.plugins() == {DRIVER: "v1"}
    assert kubelet.notifications == [(plugin.registration_socket.name, True, "")]
    for path in (plugin.registration_socket, plugin.service_socket):
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode), path
        assert stat.S_IMODE(mode) == 0o600, path


async def test_a_failed_registration_is_recorded_and_answered_with_an_error(
    plugin: KubeletPlugin, statuses: list[tuple[bool, str]]
) -> None:
    async with registration_stub(plugin.registration_socket) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.NotifyRegistrationStatus(
                reg_pb.RegistrationStatus(plugin_registered=False, error="no handler"), timeout=5
            )
    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    assert raised.value.details() == "failed registration process: no handler"
    assert not plugin.registered
    assert statuses == [(False, "no handler")]


async def test_kubelet_without_a_common_version_refuses_the_plugin(
    root: Path, plugin: KubeletPlugin, statuses: list[tuple[bool, str]]
) -> None:
    async with watching(root, services=("v2.DRAPlugin",)) as kubelet:
        await eventually(lambda: statuses, what="a NotifyRegistrationStatus")
        assert kubelet.plugins() == {}
    registered, error = statuses[0]
    assert not registered
    assert error == (
        "RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC "
        f"versions of DRA driver plugin {DRIVER} at endpoint {plugin.service_socket}: none of "
        'services supported by the plugin (["v1.DRAPlugin" "v1beta1.DRAPlugin" '
        '"v1alpha1.DRAResourceHealth"]) are supported by the kubelet (["v2.DRAPlugin"])'
    )


async def test_stale_sockets_are_replaced(root: Path, driver: FakeDriver) -> None:
    instance = KubeletPlugin(DRIVER, root, driver)
    for path in (instance.registration_socket, instance.service_socket):
        path.parent.mkdir(parents=True)
        with socket.socket(socket.AF_UNIX) as dead:  # bound, then closed: nobody listens
            dead.bind(str(path))
    await instance.start()
    try:
        async with watching(root) as kubelet:
            await kubelet.wait_registered(DRIVER, WAIT)
    finally:
        await instance.stop()


def test_a_socket_path_too_long_is_refused(short_tmp: Path, driver: FakeDriver) -> None:
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        KubeletPlugin(DRIVER, short_tmp / ("x" * 100), driver)


# -- prepare and unprepare -------------------------------------------------------------


@pytest.mark.parametrize(
    ("services", "version", "response_type"),
    [
        (("v1.DRAPlugin", "v1beta1.DRAPlugin"), "v1", dra_v1_pb2.NodePrepareResourcesResponse),
        (("v1beta1.DRAPlugin",), "v1beta1", dra_v1beta1_pb2.NodePrepareResourcesResponse),
    ],
    ids=["v1", "v1beta1"],
)
async def test_prepare_and_unprepare(
    root: Path,
    plugin: KubeletPlugin,
    driver: FakeDriver,
    services: tuple[str, ...],
    version: str,
    response_type: type,
) -> None:
    async with watching(root, services=services) as kubelet:
        await kubelet.wait_registered(DRIVER, WAIT)
        assert kubelet.plugins() == {DRIVER: version}
        prepared = await kubelet.prepare(DRIVER, [CLAIM, OTHER])
        assert isinstance(prepared, response_type)
        assert driver.prepared == [[ClaimRef(*CLAIM), ClaimRef(*OTHER)]]
        assert set(prepared.claims) == {"uid-a", "uid-b"}
        answer = prepared.claims["uid-a"]
        assert answer.error == ""
        [sent] = answer.devices
        # "gpu/small" is a subrequest: kubelet is told the request, as upstream does.
        assert list(sent.request_names) == ["gpu"]
        assert (sent.pool_name, sent.device_name) == (POOL, "widget-0")
        assert list(sent.cdi_device_ids) == ["example.com/widget=widget-0"]

        unprepared = await kubelet.unprepare(DRIVER, [CLAIM])
        assert {uid: r.error for uid, r in unprepared.claims.items()} == {"uid-a": ""}
        assert driver.unprepared == [[ClaimRef(*CLAIM)]]


async def test_per_claim_errors_travel_in_the_response(
    kubelet: DraPluginWatcher, driver: FakeDriver
) -> None:
    driver.results["uid-b"] = PrepareResult(devices=(device("widget-1"),), error="no widget free")
    driver.unprepare_errors["uid-a"] = "widget-0 is stuck"
    prepared = await kubelet.prepare(DRIVER, [CLAIM, OTHER])
    assert prepared.claims["uid-a"].error == ""
    assert prepared.claims["uid-b"].error == "no widget free"
    unprepared = await kubelet.unprepare(DRIVER, [CLAIM, OTHER])
    assert {uid: r.error for uid, r in unprepared.claims.items()} == {
        "uid-a": "widget-0 is stuck",
        "uid-b": "",
    }


async def test_a_raising_driver_fails_the_call_not_the_server(
    kubelet: DraPluginWatcher, driver: FakeDriver
) -> None:
    driver.failure = RuntimeError("widget bus on fire")
    for call, what in ((kubelet.prepare, "prepare"), (kubelet.unprepare, "unprepare")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(DRIVER, [CLAIM])
        assert raised.value.code() == grpc.StatusCode.UNKNOWN
        assert raised.value.details() == f"{what} resource claims: widget bus on fire"
    driver.failure = None
    prepared = await kubelet.prepare(DRIVER, [CLAIM])
    assert prepared.claims["uid-a"].error == ""


async def test_calls_are_serialized(kubelet: DraPluginWatcher, driver: FakeDriver) -> None:
    driver.slow = 0.05
    claims = [("default", f"claim-{i}", f"uid-{i}") for i in range(4)]
    await asyncio.gather(*(kubelet.prepare(DRIVER, [c]) for c in claims))
    assert len(driver.prepared) == 4
    assert driver.most_busy == 1


# -- device health ---------------------------------------------------------------------


async def test_health_snapshot_and_changes_reach_kubelet(
    kubelet: DraPluginWatcher, driver: FakeDriver
) -> None:
    await kubelet.wait_health(DRIVER, POOL, "widget-1", "Healthy", WAIT)
    assert kubelet.health(DRIVER) == {(POOL, "widget-0"): "Healthy", (POOL, "widget-1"): "Healthy"}
    # A partial report: widget-1 keeps its health.
    driver.reports.put_nowait([healthy("widget-0", "Unhealthy", "fan stopped")])
    await kubelet.wait_health(DRIVER, POOL, "widget-0", "Unhealthy", WAIT)
    assert kubelet.health(DRIVER)[(POOL, "widget-1")] == "Healthy"
    state = kubelet.device_health(DRIVER, POOL, "widget-0")
    assert state is not None
    assert (state.message, state.last_updated) == ("fan stopped", 1_700_000_000)
    driver.reports.put_nowait([healthy("widget-0", "On fire")])
    await kubelet.wait_health(DRIVER, POOL, "widget-0", "Unknown", WAIT)
    driver.reports.put_nowait([replace(healthy("widget-1"), health_check_timeout=600)])
    await kubelet.wait_for(
        lambda w: getattr(w.device_health(DRIVER, POOL, "widget-1"), "timeout", 0) == 600, WAIT
    )


async def test_health_not_refreshed_in_time_reads_unknown(
    root: Path, plugin: KubeletPlugin, driver: FakeDriver
) -> None:
    async with watching(root, health_timeout=1.0) as kubelet:
        await kubelet.wait_health(DRIVER, POOL, "widget-0", "Healthy", WAIT)
        # The driver sends nothing more: kubelet's lease on the report runs out.
        await kubelet.wait_health(DRIVER, POOL, "widget-0", "Unknown", WAIT)
        driver.reports.put_nowait([healthy("widget-0")])
        await kubelet.wait_health(DRIVER, POOL, "widget-0", "Healthy", WAIT)


async def test_an_ended_health_stream_is_opened_again(
    kubelet: DraPluginWatcher, driver: FakeDriver
) -> None:
    await kubelet.wait_health(DRIVER, POOL, "widget-0", "Healthy", WAIT)
    driver.reports.put_nowait(None)
    record = kubelet.plugin(DRIVER)
    assert record is not None
    await kubelet.wait_for(
        lambda _: record.health_stream_ends == 1 and record.health_watching, WAIT
    )
    assert record.health_stream_error is None
    assert driver.watches == 2


async def test_a_driver_without_health_is_not_watched(root: Path, driver: FakeDriver) -> None:
    driver.health_supported = False
    instance = KubeletPlugin(DRIVER, root, driver)
    await instance.start()
    try:
        async with watching(root) as kubelet:
            await kubelet.wait_registered(DRIVER, WAIT)
            record = kubelet.plugin(DRIVER)
            assert record is not None
            task = record.health_task
            assert task is not None
            await eventually(task.done, what="the health watch to give up")
            assert record.health_stream_error is not None
            assert record.health_stream_error.startswith("UNIMPLEMENTED")
            assert driver.watches == 1
    finally:
        await instance.stop()


# -- stop and restart ------------------------------------------------------------------


async def test_stop_removes_the_sockets_and_kubelet_deregisters(
    kubelet: DraPluginWatcher, plugin: KubeletPlugin
) -> None:
    await plugin.stop()
    assert not plugin.registration_socket.exists()
    assert not plugin.service_socket.exists()
    await kubelet.wait_for(lambda w: DRIVER not in w.plugins(), WAIT)
    with pytest.raises(LookupError, match="not registered"):
        await kubelet.prepare(DRIVER, [CLAIM])


async def test_a_restarted_plugin_registers_again(
    kubelet: DraPluginWatcher,
    plugin: KubeletPlugin,
    driver: FakeDriver,
    statuses: list[tuple[bool, str]],
) -> None:
    await kubelet.wait_health(DRIVER, POOL, "widget-0", "Healthy", WAIT)
    first = kubelet.plugin(DRIVER)
    await plugin.stop()
    await kubelet.wait_for(lambda w: DRIVER not in w.plugins(), WAIT)
    driver.snapshot = [healthy("widget-0", "Unhealthy")]
    await plugin.start()
    await kubelet.wait_registered(DRIVER, WAIT)
    assert kubelet.plugin(DRIVER) is not first
    await kubelet.wait_health(DRIVER, POOL, "widget-0", "Unhealthy", WAIT)
    await eventually(lambda: len(statuses) == 2, what="a second NotifyRegistrationStatus")
    assert statuses == [(True, ""), (True, "")]
    prepared = await kubelet.prepare(DRIVER, [CLAIM])
    assert prepared.claims["uid-a"].error == ""
    assert os.path.exists(plugin.registration_socket)
