"""The stand-in's pod-resources API (v1): which container holds which device.

Serves what kubelet serves on ``pod-resources/kubelet.sock``: `List` (every pod's
containers and their device IDs), `GetAllocatableResources` and `Get`, built from
the allocations the stand-in itself made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import grpc

from plugin_worker._proto import podresources_pb2 as pr
from plugin_worker._proto import podresources_pb2_grpc as pr_grpc

Assignments = Mapping[tuple[str, str, str], Mapping[str, list[str]]]
"""(namespace, pod, container) -> resource -> device IDs."""


class PodResourcesService(pr_grpc.PodResourcesListerServicer):
    def __init__(
        self,
        assignments: Callable[[], Assignments],
        allocatable: Callable[[], Mapping[str, list[str]]],
    ) -> None:
        self._assignments = assignments
        self._allocatable = allocatable

    def _pods(self) -> list[pr.PodResources]:
        pods: dict[tuple[str, str], pr.PodResources] = {}
        for (namespace, pod, container), held in sorted(self._assignments().items()):
            entry = pods.setdefault(
                (namespace, pod), pr.PodResources(name=pod, namespace=namespace)
            )
            entry.containers.append(
                pr.ContainerResources(
                    name=container,
                    devices=[
                        pr.ContainerDevices(resource_name=r, device_ids=ids)
                        for r, ids in sorted(held.items())
                    ],
                )
            )
        return list(pods.values())

    async def List(
        self,
        request: pr.ListPodResourcesRequest,
        context: grpc.aio.ServicerContext[pr.ListPodResourcesRequest, pr.ListPodResourcesResponse],
    ) -> pr.ListPodResourcesResponse:
        return pr.ListPodResourcesResponse(pod_resources=self._pods())

    async def GetAllocatableResources(
        self,
        request: pr.AllocatableResourcesRequest,
        context: grpc.aio.ServicerContext[
            pr.AllocatableResourcesRequest, pr.AllocatableResourcesResponse
        ],
    ) -> pr.AllocatableResourcesResponse:
        return pr.AllocatableResourcesResponse(
            devices=[
                pr.ContainerDevices(resource_name=r, device_ids=ids)
                for r, ids in sorted(self._allocatable().items())
            ]
        )

    async def Get(
        self,
        request: pr.GetPodResourcesRequest,
        context: grpc.aio.ServicerContext[pr.GetPodResourcesRequest, pr.GetPodResourcesResponse],
    ) -> pr.GetPodResourcesResponse:
        found = [
            pod
            for pod in self._pods()
            if (pod.namespace, pod.name) == (request.pod_namespace, request.pod_name)
        ]
        if not found:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"pod {request.pod_name} not found in namespace {request.pod_namespace}",
            )
        return pr.GetPodResourcesResponse(pod_resources=found[0])
