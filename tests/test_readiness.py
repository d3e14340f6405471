"""`/readyz` tells the truth, `/healthz` is liveness: a start-up held in-process, then the
real `widget-supervisor run` process beside a second instance, a rejected config, kubelet
restarts and a vanished plugin dir, over real sockets and real HTTP."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from kubelet_standin import KubeletStandIn
from plugin_worker.api import KUBELET_SOCKET
from supervisor.config import Config
from supervisor.runtime import Settings, Supervisor
from tests.support import HTTPAnswer, SupervisorProcess, eventually, http_get, write_config

V1 = "ska-sdp.org/snaffler-v1"
V2 = "ska-sdp.org/snaffler-v2"
DEVICES = [
    ("snaffler", "v1", "/dev/wibble1"),
    ("snaffler", "v1", "/dev/wibble2"),
    ("snaffler", "v2", "/dev/wibble3"),
]
INVALID = "devices:\n- type: snaffler\n  model: 2\n  device: /dev/wibble1\n"
"""Line 3 is wrong: a model must be a string."""


@pytest.fixture
def config(short_tmp: Path) -> Path:
    path = short_tmp / "etc" / "widget.yml"
    path.parent.mkdir()
    write_config(path, DEVICES)
    return path


async def get(url: str) -> HTTPAnswer:
    return await asyncio.to_thread(http_get, url)


async def ready(base_url: str) -> HTTPAnswer:
    """/readyz once it answers 200 (fails with its last answer)."""

    def answered() -> HTTPAnswer | None:
        answer = http_get(base_url + "/readyz")
        return answer if answer.status == 200 else None

    return await eventually(answered, thread=True, ignore=(OSError,), what="/readyz 200")


async def unready(base_url: str, pattern: str) -> HTTPAnswer:
    """/readyz once it answers 503 with a body matching `pattern`."""

    def answered() -> HTTPAnswer | None:
        answer = http_get(base_url + "/readyz")
        return answer if answer.status == 503 and re.search(pattern, answer.text) else None

    return await eventually(answered, thread=True, what=f"/readyz 503 matching {pattern!r}")


# -- start-up, in-process -------------------------------------------------------------


class HeldStart(Supervisor):
    """A supervisor whose start-up stops before its first config is applied until `release`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.release = asyncio.Event()

    async def _apply(self, config: Config, reason: str = "started") -> None:
        await self.release.wait()
        await super()._apply(config, reason)


async def test_readyz_says_starting_until_start_up_has_finished(
    config: Path, short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = HeldStart(
        Settings(
            config=config, plugin_dir=plugin_dir, metrics_address="127.0.0.1:0",
            domain="ska-sdp.org", pod_resources_interval=0, cdi_dir=short_tmp / "cdi",
        )
    )  # fmt: skip
    running = asyncio.create_task(supervisor.run(handle_signals=False), name="supervisor")
    try:
        await eventually(
            lambda: running.done() or supervisor.metrics_address is not None,
            what="the metrics endpoint",
        )
        assert not running.done(), running
        assert supervisor.metrics_address is not None
        base = "http://{}:{}".format(*supervisor.metrics_address)
        assert await get(base + "/readyz") == (503, "text/plain", "starting\n")
        assert (await get(base + "/healthz")).status == 200, "alive while starting"

        supervisor.release.set()
        answer = await ready(base)
        assert answer.text == "ok: 2 resources serving\n"
        await kubelet.wait_registered([V1, V2])
    finally:
        supervisor.release.set()
        supervisor.request_stop()
        await running


# -- the real process ------------------------------------------------------------------


@pytest.mark.slow
async def test_readyz_names_the_process_holding_a_socket_until_it_goes(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    first = await SupervisorProcess(config, plugin_dir).start()
    second = SupervisorProcess(config, plugin_dir)
    try:
        await kubelet.wait_registered([V1, V2])
        assert (await ready(first.metrics_url)).text == "ok: 2 resources serving\n"
        assert first.process is not None

        await second.start()
        await second.wait_for_log(r"started .*: \+2 resources")
        answer = await get(second.metrics_url + "/readyz")
        assert answer.status == 503, answer
        holder = rf"\(pid {first.process.pid}, uid \d+ \(.*supervisor run .*\)\)"
        lines = answer.text.splitlines()
        assert len(lines) == 2, answer.text
        for name, line in zip([V1, V2], lines, strict=True):
            assert re.fullmatch(rf"{re.escape(name)}: socket served by another process {holder}",
                                line), line  # fmt: skip
        assert (await get(second.metrics_url + "/healthz")).status == 200

        # The first one goes away (a DaemonSet rollout): the second takes over, and is ready.
        assert await first.stop() == 0
        assert (await ready(second.metrics_url)).text == "ok: 2 resources serving\n"
    finally:
        await first.stop()
        assert await second.stop() in (0, None)  # None: it never started


@pytest.mark.slow
async def test_readyz_names_a_rejected_config_until_a_good_one(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await ready(supervisor.metrics_url)
        config.write_text(INVALID)
        answer = await unready(supervisor.metrics_url, "config rejected")
        assert answer.text.startswith(
            f"config rejected: {config}:3: devices[0].model: must be a non-empty string"
        ), answer.text
        assert len(answer.text.splitlines()) == 1, "the old config still serves every resource"
        assert (await get(supervisor.metrics_url + "/healthz")).status == 200

        write_config(config, DEVICES[:1])
        assert (await ready(supervisor.metrics_url)).text == "ok: 1 resources serving\n"
    finally:
        assert await supervisor.stop() == 0


@pytest.mark.slow
async def test_readyz_stays_200_through_kubelet_restarts(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    done = threading.Event()

    def sample_until_done() -> list[HTTPAnswer]:
        answers, deadline = [], time.monotonic() + 60
        while not done.wait(0.002) and time.monotonic() < deadline:  # the poll interval
            answers.append(http_get(supervisor.metrics_url + "/readyz"))
        return answers

    try:
        await kubelet.wait_registered([V1, V2])
        await ready(supervisor.metrics_url)
        sampler = asyncio.ensure_future(asyncio.to_thread(sample_until_done))
        for _ in range(5):
            previous = kubelet.plugins[V1].registered_at

            def registered_again(k: KubeletStandIn, p: float = previous) -> bool:
                return V1 in k.plugins and k.plugins[V1].registered_at > p

            await kubelet.restart()  # every plugin socket deleted, kubelet.sock created anew
            await kubelet.wait_for(registered_again)
            await kubelet.wait_registered([V1, V2])
        done.set()
        answers = await sampler
        assert len(answers) >= 5, answers
        assert [a for a in answers if a.status != 200] == []
    finally:
        done.set()
        assert await supervisor.stop() == 0


@pytest.mark.slow
async def test_readyz_names_a_socket_that_cannot_be_served_while_the_plugin_dir_is_gone(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    replacement = KubeletStandIn(plugin_dir)
    try:
        await kubelet.wait_registered([V1, V2])
        await ready(supervisor.metrics_url)
        await kubelet.stop()
        shutil.rmtree(plugin_dir)
        answer = await unready(supervisor.metrics_url, f"{re.escape(V2)}: socket .* not served")
        assert re.search(
            rf"(?m)^{re.escape(V1)}: socket \S+ not served for \d+ s: could not "
            rf"listen in {re.escape(str(plugin_dir))}$",
            answer.text,
        ), answer.text
        assert (await get(supervisor.metrics_url + "/healthz")).status == 200

        plugin_dir.mkdir()
        await replacement.start()
        await replacement.wait_registered([V1, V2])
        await ready(supervisor.metrics_url)
        assert (plugin_dir / KUBELET_SOCKET).exists()
    finally:
        await replacement.stop()
        assert await supervisor.stop() == 0
