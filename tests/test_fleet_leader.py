"""Leader election through a Lease, against the API-server stand-in: one leads, the other
stands by, takes over when the leader stops renewing, and two never lead at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import pytest

from apiserver_standin.server import ApiServer
from dra_driver.kube import make_client
from fleet.leader import ElectionSettings, LeaderElector
from tests.support import SupervisorProcess, eventually, sample
from tests.test_simulate import CONFIG, SNAFFLER, kwok_node


def fast(identity: str) -> ElectionSettings:
    return ElectionSettings(
        identity=identity, lease_duration=1.0, renew_deadline=0.6, retry_period=0.1
    )


async def test_one_leads_and_the_other_takes_over(api: ApiServer, tmp_path: Path) -> None:
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    leading: list[str] = []

    def candidate(name: str) -> tuple[LeaderElector, asyncio.Task[None]]:
        elector = LeaderElector(make_client(kubeconfig), fast(name))

        async def lead() -> None:
            leading.append(name)
            try:
                await asyncio.Event().wait()
            finally:
                leading.remove(name)

        return elector, asyncio.create_task(elector.run(lead))

    _, first_task = candidate("a")
    await eventually(lambda: leading == ["a"], what="a leads")
    second, second_task = candidate("b")
    await eventually(lambda: second.leader == "a", what="b sees a leading")
    await asyncio.sleep(1.5)  # longer than the lease: a keeps renewing, b must not take it
    assert leading == ["a"]
    first_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first_task
    await eventually(lambda: leading == ["b"], timeout=5, what="b takes over")
    (lease,) = api.objects("leases")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    second_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second_task


@pytest.mark.slow  # the standby waits out the default 15 s lease
async def test_two_simulators_one_writer(api: ApiServer, tmp_path: Path) -> None:
    api.put_object(kwok_node("kwok-1"))
    config = tmp_path / "widget.yml"
    config.write_text(CONFIG)
    config.chmod(0o644)
    processes = []
    for name in ("sim-a", "sim-b"):
        process = SupervisorProcess(config, tmp_path / "unused")
        process.args = [
            sys.executable, "-m", "supervisor", "simulate", "--config", str(config),
            "--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig")),
            "--metrics-address", "127.0.0.1:0", "--leader-elect",
        ]  # fmt: skip
        process.env = {**os.environ, "POD_NAME": name}
        processes.append(process)
    try:
        for process in processes:
            await process.start()

        def written() -> bool:
            status = api.objects("nodes")[0].get("status", {})
            return SNAFFLER in status.get("allocatable", {})

        await eventually(written, what="kwok-1 written by the leader")
        exported = [sample(p.metrics(), "widget_simulated_nodes") for p in processes]
        assert sorted(exported, key=lambda v: v is None) == [1, None], exported
        leader = processes[exported.index(1)]
        standby = processes[1 - exported.index(1)]
        assert await leader.stop() == 0
        api.put_object(kwok_node("kwok-2"))
        await eventually(
            lambda: SNAFFLER in api.objects("nodes")[1].get("status", {}).get("allocatable", {}),
            timeout=30, what="the standby took over and wrote kwok-2",
        )  # fmt: skip
        assert sample(standby.metrics(), "widget_simulated_nodes") == 2
    finally:
        for process in processes:
            await process.stop()
