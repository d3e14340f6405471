"""The kubelet-facing gRPC services of the DRA plugin: translation between gRPC and `Driver`.

Owns the request/response mapping (in one place: the functions below), status codes,
serialization of driver calls and the health stream. Owns no sockets and no lifecycle
(`kubelet_plugin` does), and no device logic (the `Driver` does).

As upstream's kubeletplugin helper (draplugin.go and health.go as of kubernetes/kubernetes
commit fde22c3f9aacfd260225a9741de123a41157b7c0, registrationserver.go as of
fa7ba8e2f963aad48acbd0aee416f9743af443f5): v1beta1 is served by converting to and from the
v1 implementation (its ``V1ServerWrapper``); a driver that raises fails the whole call with
status UNKNOWN ("prepare resource claims: ..."), as an error returned by upstream's driver
does, while per-claim errors travel in the response; subrequest names are cut to their
request ("gpu/small" -> "gpu"); NotifyRegistrationStatus with ``plugin_registered=False``
is recorded and answered with an error ("failed registration process: ...").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from dra_driver._proto import dra_health_v1alpha1_pb2 as health_pb
from dra_driver._proto import dra_health_v1alpha1_pb2_grpc as health_grpc
from dra_driver._proto import dra_v1_pb2 as v1
from dra_driver._proto import dra_v1_pb2_grpc as v1_grpc
from dra_driver._proto import dra_v1beta1_pb2 as v1beta1
from dra_driver._proto import dra_v1beta1_pb2_grpc as v1beta1_grpc
from dra_driver._proto import pluginregistration_v1_pb2 as reg_pb
from dra_driver._proto import pluginregistration_v1_pb2_grpc as reg_grpc
from dra_driver.api import (
    HEALTHY,
    PLUGIN_TYPE,
    SUPPORTED_SERVICES,
    UNHEALTHY,
    ClaimRef,
    DeviceHealth,
    Driver,
    PrepareResult,
)

logger = logging.getLogger(__name__)

_HEALTH_STATUS = {HEALTHY: health_pb.HEALTHY, UNHEALTHY: health_pb.UNHEALTHY}


class DriverCallError(Exception):
    """The driver raised: the whole gRPC call fails (its message is the status details)."""


# -- translation between gRPC and the dataclasses, in one place ----------------------

_M = TypeVar("_M", bound=Message)
_T = TypeVar("_T")


def convert(message: Message, to: type[_M]) -> _M:
    """The same message in another package of the same wire schema (v1 <-> v1beta1)."""
    return to.FromString(message.SerializeToString())


def claim_refs(claims: Iterable[v1.Claim]) -> list[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in claims]


def base_request_name(name: str) -> str:
    # upstream's resourceclaim.BaseRequestRef: kubelet knows requests, not subrequests.
    return name.split("/", 1)[0]


def prepare_response(results: Mapping[str, PrepareResult]) -> v1.NodePrepareResourcesResponse:
    response = v1.NodePrepareResourcesResponse()
    for uid, result in results.items():
        entry = response.claims[uid]
        entry.error = result.error
        entry.devices.extend(
            v1.Device(
                request_names=[base_request_name(r) for r in device.requests],
                pool_name=device.pool,
                device_name=device.device,
                cdi_device_ids=device.cdi_device_ids,
            )
            for device in result.devices
        )
    return response


def unprepare_response(errors: Mapping[str, str]) -> v1.NodeUnprepareResourcesResponse:
    response = v1.NodeUnprepareResourcesResponse()
    for uid, error in errors.items():
        response.claims[uid].error = error
    return response


def health_response(devices: Iterable[DeviceHealth]) -> health_pb.NodeWatchResourcesResponse:
    return health_pb.NodeWatchResourcesResponse(
        devices=[
            health_pb.DeviceHealth(
                device=health_pb.DeviceIdentifier(pool_name=d.pool, device_name=d.device),
                health=_HEALTH_STATUS.get(d.health, health_pb.UNKNOWN),
                last_updated_time=max(int(d.last_updated), 0),
                health_check_timeout_seconds=int(d.health_check_timeout),
                message=d.message,
            )
            for d in devices
        ]
    )


def plugin_info(driver_name: str, service_socket: Path) -> reg_pb.PluginInfo:
    return reg_pb.PluginInfo(
        type=PLUGIN_TYPE,
        name=driver_name,
        endpoint=str(service_socket),
        supported_versions=SUPPORTED_SERVICES,
    )


# -- the services ---------------------------------------------------------------------


class DriverCalls:
    """Prepare and unprepare behind every DRAPlugin version: serialized, logged, and a
    raising driver turned into `DriverCallError`."""

    def __init__(self, driver_name: str, driver: Driver, *, serialize: bool) -> None:
        self._name = driver_name
        self._driver = driver
        self._lock = asyncio.Lock() if serialize else None

    def _serialized(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._lock if self._lock is not None else contextlib.nullcontext()

    async def prepare(
        self, request: v1.NodePrepareResourcesRequest
    ) -> v1.NodePrepareResourcesResponse:
        claims = claim_refs(request.claims)
        async with self._serialized():
            try:
                results = await self._driver.prepare(claims)
            except Exception as error:
                logger.exception(
                    "[%s] the driver raised preparing %d claims", self._name, len(claims)
                )
                raise DriverCallError(f"prepare resource claims: {error}") from error
        self._log("prepare", claims, {u: r.error for u, r in results.items()})
        return prepare_response(results)

    async def unprepare(
        self, request: v1.NodeUnprepareResourcesRequest
    ) -> v1.NodeUnprepareResourcesResponse:
        claims = claim_refs(request.claims)
        async with self._serialized():
            try:
                errors = await self._driver.unprepare(claims)
            except Exception as error:
                logger.exception(
                    "[%s] the driver raised unpreparing %d claims", self._name, len(claims)
                )
                raise DriverCallError(f"unprepare resource claims: {error}") from error
        self._log("unprepare", claims, errors)
        return unprepare_response(errors)

    def _log(self, what: str, claims: Sequence[ClaimRef], errors: Mapping[str, str]) -> None:
        for claim in claims:
            error = errors.get(claim.uid)
            if error is None:
                # kubelet treats a claim missing from the answer as failed and asks again.
                logger.warning(
                    "[%s] the driver gave no %s result for claim %s/%s (uid %s)",
                    *(self._name, what, claim.namespace, claim.name, claim.uid),
                )
            elif error:
                logger.warning("[%s] %s of claim %s/%s failed: %s",
                               self._name, what, claim.namespace, claim.name, error)  # fmt: skip
            else:
                logger.debug(
                    "[%s] %s of claim %s/%s done", self._name, what, claim.namespace, claim.name
                )


class DraV1Service(v1_grpc.DRAPluginServicer):
    def __init__(self, calls: DriverCalls) -> None:
        self._calls = calls

    async def NodePrepareResources(
        self,
        request: v1.NodePrepareResourcesRequest,
        context: grpc.aio.ServicerContext[
            v1.NodePrepareResourcesRequest, v1.NodePrepareResourcesResponse
        ],
    ) -> v1.NodePrepareResourcesResponse:
        try:
            return await self._calls.prepare(request)
        except DriverCallError as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))

    async def NodeUnprepareResources(
        self,
        request: v1.NodeUnprepareResourcesRequest,
        context: grpc.aio.ServicerContext[
            v1.NodeUnprepareResourcesRequest, v1.NodeUnprepareResourcesResponse
        ],
    ) -> v1.NodeUnprepareResourcesResponse:
        try:
            return await self._calls.unprepare(request)
        except DriverCallError as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))


class DraV1beta1Service(v1beta1_grpc.DRAPluginServicer):
    """v1beta1 on top of the v1 implementation, as upstream's V1ServerWrapper does."""

    def __init__(self, calls: DriverCalls) -> None:
        self._calls = calls

    async def NodePrepareResources(
        self,
        request: v1beta1.NodePrepareResourcesRequest,
        context: grpc.aio.ServicerContext[
            v1beta1.NodePrepareResourcesRequest, v1beta1.NodePrepareResourcesResponse
        ],
    ) -> v1beta1.NodePrepareResourcesResponse:
        try:
            response = await self._calls.prepare(convert(request, v1.NodePrepareResourcesRequest))
        except DriverCallError as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        return convert(response, v1beta1.NodePrepareResourcesResponse)

    async def NodeUnprepareResources(
        self,
        request: v1beta1.NodeUnprepareResourcesRequest,
        context: grpc.aio.ServicerContext[
            v1beta1.NodeUnprepareResourcesRequest, v1beta1.NodeUnprepareResourcesResponse
        ],
    ) -> v1beta1.NodeUnprepareResourcesResponse:
        try:
            response = await self._calls.unprepare(
                convert(request, v1.NodeUnprepareResourcesRequest)
            )
        except DriverCallError as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        return convert(response, v1beta1.NodeUnprepareResourcesResponse)


async def _until_set(stopping: asyncio.Event, items: AsyncIterator[_T]) -> AsyncIterator[_T]:
    """`items` until they end or `stopping` is set, whichever comes first."""
    stop = asyncio.ensure_future(stopping.wait())
    step: asyncio.Future[_T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(items))
            await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield item
    finally:
        for future in (step, stop):
            if future is not None and not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await future
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class HealthService(health_grpc.DRAResourceHealthServicer):
    """NodeWatchResources: one `Driver.health` iterator per stream, until `stopping` is set
    (the plugin stops) or kubelet goes away."""

    def __init__(self, driver_name: str, driver: Driver, stopping: asyncio.Event) -> None:
        self._name = driver_name
        self._driver = driver
        self._stopping = stopping

    async def NodeWatchResources(
        self,
        request: health_pb.NodeWatchResourcesRequest,
        context: grpc.aio.ServicerContext[
            health_pb.NodeWatchResourcesRequest, health_pb.NodeWatchResourcesResponse
        ],
    ) -> AsyncIterator[health_pb.NodeWatchResourcesResponse]:
        logger.info("[%s] kubelet opened the device health stream", self._name)
        try:
            async for devices in _until_set(self._stopping, self._driver.health()):
                logger.debug("[%s] sending the health of %d devices", self._name, len(devices))
                yield health_response(devices)
        except NotImplementedError:
            logger.info("[%s] the driver reports no device health: UNIMPLEMENTED", self._name)
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "device health reporting is not supported by this driver",
            )
        except Exception as error:
            logger.exception("[%s] the driver's device health failed", self._name)
            await context.abort(grpc.StatusCode.UNKNOWN, f"watch device health: {error}")
        finally:
            logger.info("[%s] the device health stream ended", self._name)


class RegistrationService(reg_grpc.RegistrationServicer):
    """GetInfo and NotifyRegistrationStatus on the registration socket."""

    def __init__(self, info: reg_pb.PluginInfo, on_status: Callable[[bool, str], None]) -> None:
        self._info = info
        self._on_status = on_status

    async def GetInfo(
        self,
        request: reg_pb.InfoRequest,
        context: grpc.aio.ServicerContext[reg_pb.InfoRequest, reg_pb.PluginInfo],
    ) -> reg_pb.PluginInfo:
        return self._info

    async def NotifyRegistrationStatus(
        self,
        request: reg_pb.RegistrationStatus,
        context: grpc.aio.ServicerContext[
            reg_pb.RegistrationStatus, reg_pb.RegistrationStatusResponse
        ],
    ) -> reg_pb.RegistrationStatusResponse:
        self._on_status(request.plugin_registered, request.error)
        if not request.plugin_registered:
            await context.abort(
                grpc.StatusCode.UNKNOWN, f"failed registration process: {request.error}"
            )
        return reg_pb.RegistrationStatusResponse()
