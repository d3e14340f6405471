"""`widget-supervisor demo --api dra`: DRA mode without a cluster.

Runs the supervisor in a temp dir against two local stand-ins, over real HTTP and real
unix sockets: an API server (`apiserver_standin`) and kubelet's DRA side
(`kubelet_standin.dra`), plus the device-plugin kubelet stand-in for any resource that
stays a device-plugin one. Then it plays the scheduler's part for one claim per DRA
resource (the first offered device of its DeviceClass), has kubelet prepare it, and
shows the slices, the claim and the container environment the CDI spec yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from apiserver_standin.server import ApiServer
from dra_driver.claim_cdi import spec_file_name
from dra_driver.objects import device_classes
from kubelet_standin import KubeletStandIn
from kubelet_standin.dra import DraPluginWatcher
from plugin_worker.api import DRA, ResourceSpec
from supervisor.config import Config
from supervisor.demo import serve_until, stop_on_signals
from supervisor.runtime import Settings, Supervisor

NODE = "demo-node"
NAMESPACE = "demo"
PUBLISH_TIMEOUT = 15.0


async def run_dra_demo(
    config: Path, loaded: Config, metrics_address: str, duration: float | None, *, copy: bool
) -> None:
    dra = [spec for spec in loaded.resources if spec.api == DRA]
    with tempfile.TemporaryDirectory(prefix="widget-dra-") as tmp:
        root = Path(tmp)
        if copy:
            config = Path(shutil.copyfile(config, root / config.name))
        api = ApiServer()
        await api.start()
        api.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
        for document in device_classes(dra, loaded.dra_driver):  # what the chart installs
            api.put_object(document)
        kubelet = DraPluginWatcher(root / "kubelet")
        await kubelet.start()
        device_plugins = KubeletStandIn(root / "device-plugins")
        await device_plugins.start()
        supervisor = Supervisor(
            Settings(
                config=config, plugin_dir=root / "device-plugins",
                metrics_address=metrics_address, domain=loaded.domain, strict_perms=False,
                node_name=NODE, cdi_dir=root / "cdi", pod_resources_interval=0,
                kubelet_root=root / "kubelet", kubeconfig=api.kubeconfig(root / "kubeconfig"),
            )
        )  # fmt: skip
        task = asyncio.create_task(supervisor.run(handle_signals=False), name="supervisor")
        try:
            await _show(api, kubelet, supervisor, loaded, dra, root, config, duration)
        finally:
            supervisor.request_stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await device_plugins.stop()
            await kubelet.stop()
            await api.stop()


async def _show(
    api: ApiServer,
    kubelet: DraPluginWatcher,
    supervisor: Supervisor,
    loaded: Config,
    dra: list[ResourceSpec],
    root: Path,
    config: Path,
    duration: float | None,
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    driver = loaded.dra_driver
    await kubelet.wait_registered(driver, timeout=PUBLISH_TIMEOUT)
    publisher = supervisor.dra.publisher if supervisor.dra is not None else None
    assert publisher is not None
    await asyncio.wait_for(publisher.wait_in_sync(), PUBLISH_TIMEOUT)
    click.echo(f"\nwidget-supervisor is serving {config} through DRA (driver {driver}, "
               f"node {NODE}); edit it to see a live reload")  # fmt: skip
    click.echo(f"API server stand-in: {api.url}  (kubeconfig: {root / 'kubeconfig'})\n")
    click.echo(slice_table(api.objects("resourceslices")) + "\n")
    for spec in dra:
        claim = _allocate(api, spec, driver)
        if claim is None:
            click.echo(f"no device of {spec.name} is offered (all Unhealthy?)\n")
            continue
        name, uid, device = claim
        response = await kubelet.prepare(driver, [(NAMESPACE, name, uid)])
        result = response.claims[uid]
        if result.error:
            click.echo(f"claim {NAMESPACE}/{name}: prepare failed: {result.error}\n")
            continue
        ids = [i for d in result.devices for i in d.cdi_device_ids]
        click.echo(f"claim {NAMESPACE}/{name}: scheduler stand-in allocated {device}; "
                   f"kubelet prepared it: CDI {', '.join(ids)}")  # fmt: skip
        click.echo(container_text(root / "cdi" / spec_file_name(uid)) + "\n")
    host, port = supervisor.metrics_address or ("?", 0)
    click.echo(f"metrics: http://{host}:{port}/metrics   ready: http://{host}:{port}/readyz")
    await serve_until(stop, duration)


def slice_table(slices: list[dict[str, Any]]) -> str:
    """The pool's slices and devices, as `kubectl get resourceslices -o yaml` would show."""
    rows = [("SLICE", "GEN", "DEVICE", "ATTRIBUTES")]
    for s in sorted(slices, key=lambda s: str(s["metadata"]["name"])):
        pool = s["spec"]["pool"]
        for device in s["spec"]["devices"]:
            attributes = ", ".join(
                f"{k}={next(iter(v.values()))}" for k, v in sorted(device["attributes"].items())
            )
            shared = device.get("capacity", {}).get("shares")
            if shared is not None:
                attributes += f"; shares {shared['value']}"
            rows.append((s["metadata"]["name"], str(pool["generation"]), device["name"],
                         attributes))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _offered(api: ApiServer, spec: ResourceSpec, driver: str) -> Iterator[str]:
    for s in api.objects("resourceslices"):
        for device in s["spec"]["devices"]:
            attributes = device["attributes"]
            if attributes["type"] == {"string": spec.type} and attributes["model"] == {
                "string": spec.model
            }:
                yield device["name"]


def _allocate(api: ApiServer, spec: ResourceSpec, driver: str) -> tuple[str, str, str] | None:
    """The scheduler's part, minimally: the first offered device of the class, as the
    claim's allocation result."""
    device = next(_offered(api, spec, driver), None)
    if device is None:
        return None
    name = f"{spec.type}-{spec.model}".replace("_", "-")
    request = "device"
    stored = api.put_object({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"devices": {"requests": [{"name": request, "exactly": {
            "deviceClassName": f"{name}.{driver}"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": request, "driver": driver, "pool": NODE, "device": device}]}}},
    })  # fmt: skip
    return name, stored["metadata"]["uid"], device


def container_text(spec_file: Path) -> str:
    """What a container given the claim receives, from the claim's CDI spec."""
    document = json.loads(spec_file.read_text())
    lines = []
    for device in document["devices"]:
        edits = device["containerEdits"]
        lines += [f"  env {entry}" for entry in edits.get("env", ())]
        lines += [f"  device node {n['path']}" for n in edits.get("deviceNodes", ())]
        lines += [
            f"  mount {m['hostPath']} -> {m['containerPath']}" for m in edits.get("mounts", ())
        ]
    return "\n".join(lines)
