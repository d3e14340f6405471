"""The mock DRA driver on its own: what the pool offers as health changes, prepare's
checks, admission faults and sharing, and what a restarted driver knows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dra_driver.api import ClaimRef
from dra_driver.driver import ClaimError, MockDriver
from plugin_worker.api import ResourceSpec
from supervisor.config import parse_config
from tests.support import eventually

NODE, DRIVER = "node-a", "ska-sdp.org"


def specs(text: str) -> tuple[ResourceSpec, ...]:
    return parse_config(("api: dra\n" + text).encode(), source="c.yml").resources


class Claims:
    """ResourceClaims as the API server would return them (our own ReadClaim contract)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, name: str, *devices: str, request: str = "r") -> ClaimRef:
        uid = f"uid-{name}"
        self.stored[("ns", name)] = {
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "status": {"allocation": {"devices": {"results": [
                {"request": request, "driver": DRIVER, "pool": NODE, "device": d}
                for d in devices]}}},
        }  # fmt: skip
        return ClaimRef("ns", name, uid)

    async def read(self, namespace: str, name: str) -> Mapping[str, Any]:
        try:
            return self.stored[(namespace, name)]
        except KeyError:
            raise ClaimError("404 NotFound: not found") from None


def driver(tmp_path: Path, claims: Claims) -> MockDriver:
    return MockDriver(driver=DRIVER, node=NODE, cdi_dir=tmp_path / "cdi", read_claim=claims.read)


async def test_unhealthy_devices_leave_the_pool_and_come_back(tmp_path: Path) -> None:
    mock = driver(tmp_path, Claims())
    mock.update(specs("devices:\n- {type: a, model: b, device: /d1}\n"
                      "- {type: a, model: b, device: /d2, faults: {unhealthyAfter: 0.2s, "
                      "recoverAfter: 0.3s}}\n"))  # fmt: skip

    def offered() -> list[str]:
        return [d["name"] for d in mock.offered()["ska-sdp.org/a-b"]]

    assert offered() == ["a-b-d1", "a-b-d2"]
    await eventually(lambda: offered() == ["a-b-d1"], what="d2 Unhealthy: not offered")
    stream = mock.health()
    report = {h.device: h.health for h in await anext(stream)}
    await stream.aclose()
    assert report == {"a-b-d1": "Healthy", "a-b-d2": "Unhealthy"}
    await eventually(lambda: offered() == ["a-b-d1", "a-b-d2"], what="d2 recovered")
    mock.close()


async def test_prepare_checks_every_device_before_writing(tmp_path: Path) -> None:
    claims = Claims()
    mock = driver(tmp_path, claims)
    mock.update(specs("devices:\n- {type: a, model: b, device: /d1}\n"))
    mixed = claims.add("mixed", "a-b-d1", "a-b-nope")
    elsewhere = claims.add("elsewhere", "a-b-d1")
    claims.stored[("ns", "elsewhere")]["status"]["allocation"]["devices"]["results"][0]["pool"] = (
        "node-b"  # allocated from another node's pool
    )
    results = await mock.prepare([mixed, elsewhere, ClaimRef("ns", "gone", "uid-gone")])
    assert "does not have: node-a/a-b-nope" in results["uid-mixed"].error
    assert "does not have: node-b/a-b-d1" in results["uid-elsewhere"].error
    assert results["uid-gone"].error == "cannot read ResourceClaim ns/gone: 404 NotFound: not found"
    replaced = ClaimRef("ns", "mixed", "uid-other")
    assert "has UID uid-mixed, not uid-other" in (await mock.prepare([replaced]))["uid-other"].error
    assert not (tmp_path / "cdi").exists(), "nothing half-written"
    mock.close()


async def test_admission_faults_apply_to_prepare(tmp_path: Path) -> None:
    claims = Claims()
    mock = driver(tmp_path, claims)
    mock.update(specs("devices:\n- {type: a, model: b, device: /d1}\nresources:\n"
                      "- {type: a, model: b, allocate: {failureRate: 0.5, seed: 7}}\n"))  # fmt: skip
    refs = [claims.add(f"c{i}", "a-b-d1") for i in range(40)]
    errors = [(await mock.prepare([ref]))[ref.uid].error for ref in refs]
    failed = [e for e in errors if e]
    assert 5 < len(failed) < 35, errors
    assert all(e.startswith("injected failure (allocate.failureRate 0.5") for e in failed)
    again = MockDriver(driver=DRIVER, node=NODE, cdi_dir=tmp_path / "x", read_claim=claims.read)
    again.update(mock.specs())
    repeat = [(await again.prepare([ref]))[ref.uid].error for ref in refs]
    assert [bool(e) for e in repeat] == [bool(e) for e in errors], "seeded: the same sequence"
    mock.close()
    again.close()


@pytest.mark.parametrize("replicas", [1, 3])
async def test_a_shared_device_is_one_dra_device(tmp_path: Path, replicas: int) -> None:
    claims = Claims()
    mock = driver(tmp_path, claims)
    mock.update(specs("devices:\n- {type: a, model: b, device: /d1}\nresources:\n"
                      f"- {{type: a, model: b, replicas: {replicas}}}\n"))  # fmt: skip
    (entry,) = mock.offered()["ska-sdp.org/a-b"]
    assert entry["name"] == "a-b-d1"
    assert entry.get("allowMultipleAllocations", False) is (replicas > 1)
    first, second = claims.add("one", "a-b-d1"), claims.add("two", "a-b-d1")
    results = await mock.prepare([first, second])
    assert all(not r.error for r in results.values())
    spec = json.loads((tmp_path / "cdi" / "widget-claim-uid-one.json").read_text())
    assert "WIDGET_VISIBLE_DEVICE_IDS=a-b-d1" in spec["devices"][0]["containerEdits"]["env"]
    assert mock.prepared_counts() == {"ska-sdp.org/a-b": 2}
    restarted = driver(tmp_path, claims)  # a restarted supervisor reads the spec files
    restarted.update(mock.specs())
    assert restarted.prepared_counts() == {"ska-sdp.org/a-b": 2}
    await restarted.unprepare([first])
    assert restarted.prepared_counts() == {"ska-sdp.org/a-b": 1}
    mock.close()
    restarted.close()
