"""Hostile input: fuzzed configs, fuzzed Allocate/GetPreferredAllocation over real gRPC,
and raw garbage on a plugin socket. The only outcomes allowed are a valid result or a
clean, explained refusal; the server lives on."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from plugin_worker.api import socket_name_for
from supervisor.config import MAX_CONFIG_BYTES, Config, parse_config
from supervisor.errors import ConfigError
from supervisor.parse_process import PARSE_DEADLINE, ConfigParser, only_python_threads
from tests.reliability.conftest import STAY, V1, Resources
from tests.support import wait_until, write_config

pytestmark = pytest.mark.slow

# -- the config loader -------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=40), st.sampled_from(["type", "model", "device", "id", "domain", "devices",
                                           "/dev/x", "snaffler", "v1", "", " "]),
)  # fmt: skip
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(
                st.text(max_size=10),
                st.sampled_from(["type", "model", "device", "id", "devices", "domain"]),
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)
devices = st.fixed_dictionaries(
    {"type": st.text(min_size=1, max_size=70), "model": st.text(min_size=1, max_size=70),
     "device": st.one_of(st.text(max_size=80), st.just("/dev/") | st.text(max_size=60).map(lambda t: "/dev/" + t))},
    optional={"id": st.text(max_size=80)},
)  # fmt: skip


def _only_config_or_config_error(data: bytes) -> None:
    try:
        result = parse_config(data, source="fuzz.yml")
    except ConfigError as error:
        assert error.problems, "a ConfigError must say what is wrong"  # noqa: PT017
        assert all(str(p).startswith("fuzz.yml") for p in error.problems), str(error)  # noqa: PT017
        return
    assert isinstance(result, Config)
    ids = [d.id for r in result.resources for d in r.devices]
    assert len(ids) == len(set(ids)), "device IDs must be unique"


def _dump(tree: object) -> bytes:
    from io import StringIO

    out = StringIO()
    YAML(typ="safe").dump(tree, out)
    return out.getvalue().encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_random_yaml_trees(tree: object) -> None:
    _only_config_or_config_error(_dump(tree))
    _only_config_or_config_error(_dump({"devices": tree}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(devices, max_size=8), st.one_of(st.none(), st.text(max_size=30)))
def test_random_device_lists(entries: list[dict[str, str]], domain: str | None) -> None:
    tree: dict[str, object] = {"devices": entries}
    if domain is not None:
        tree["domain"] = domain
    _only_config_or_config_error(_dump(tree))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    _only_config_or_config_error(data)
    _only_config_or_config_error(b"devices:\n- " + data)


_HOSTILE = {
    "deep-flow-lists": b"devices: " + b"[" * 200_000 + b"]" * 200_000,
    "deep-flow-maps": b"devices: " + b"{a: " * 100_000 + b"x" + b"}" * 100_000,
    "deep-block-lists": b"devices:\n" + b"".join(b" " * i + b"-\n" for i in range(3000)),
    "alias-bomb": b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + b"".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n".encode()
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + b"devices: *i\n",
    "alias-bomb-in-devices": b"x: &x {type: a, model: b, device: /dev/c}\ndevices: ["
    + b", ".join([b"*x"] * 150_000)
    + b"]\n",
    "huge-string": b"devices:\n- type: " + b"a" * (MAX_CONFIG_BYTES - 40) + b"\n",
    "many-devices": b"devices:\n"
    + b"".join(f"- {{type: t, model: m, device: /dev/d{i}}}\n".encode() for i in range(25_000)),
    "non-utf8": b"devices:\n- type: \xff\xfe\n",
    "utf16-bom": "devices: []\n".encode("utf-16"),
    "nul-bytes": b"devices:\n- type: a\x00b\n",
    "escaped-nul-path": b'devices:\n- {type: a, model: b, device: "/dev/\\0x"}\n',
    "tags": b"devices: !!python/object:os.system [echo]\n",
    "merge-keys": b"base: &b {type: a, model: b}\ndevices:\n- <<: *b\n  device: /dev/x\n",
    "complex-keys": b"devices:\n- ? [a, b]\n  : c\n",
    "duplicate-keys": b"devices:\n- {type: a, type: b, model: c, device: /dev/d}\n",
}


def _merge_bomb(levels: int = 9, width: int = 9) -> bytes:
    """Each level merges the one below `width` times: 81 aliases, far under the alias
    limit, and more than 60 s of CPU in ruamel's constructor."""
    lines = ["a0: &a0 {k: v}"]
    for level in range(1, levels + 1):
        merged = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level}\n  <<: [{merged}]")
    return ("\n".join(lines) + "\ndevices: []\n").encode()


_HOSTILE |= {
    "5000-digit-integer": b"devices:\n- {type: a, model: b, device: /dev/c, numa: "
    + b"9" * 5000
    + b"}\n",
    "merge-key-bomb": _merge_bomb(),
}


@pytest.fixture(scope="module")
def parser() -> Iterator[ConfigParser]:
    """The product's own bounded parser: a child process with a deadline and a memory cap."""
    bounded = ConfigParser()
    yield bounded
    bounded.close()


# The deep-flow cases once made parse_config run for minutes; config.py now refuses
# nesting deeper than MAX_NESTING before any parser sees the text. The merge-key bomb
# still would: the child process parsing it is killed at the deadline.
_CASES = [pytest.param(name, id=name) for name in _HOSTILE]


def _outcome(parser: ConfigParser, data: bytes, source: str) -> Config | ConfigError:
    try:
        return parser.parse(data, source=source)
    except ConfigError as error:
        return error


@pytest.mark.parametrize("name", _CASES)
def test_hostile_config_is_refused_cleanly_in_bounded_time_and_memory(
    name: str, parser: ConfigParser
) -> None:
    """Through the parser the supervisor and the CLI use: accepted or a clean ConfigError
    within the deadline, the child's memory capped (MEMORY_LIMIT), nothing raised else."""
    data = _HOSTILE[name][:MAX_CONFIG_BYTES]
    started = time.monotonic()
    outcome = _outcome(parser, data, "hostile.yml")
    if isinstance(outcome, ConfigError):
        assert str(outcome).startswith("hostile.yml"), outcome
        assert "Traceback" not in str(outcome)
    else:
        assert name in {"merge-keys", "many-devices"}, outcome
    took = time.monotonic() - started
    # The deadline is exact in the parser; the margin is for killing and a busy machine.
    assert took < PARSE_DEADLINE + 2, f"{name} took {took:.1f} s"


_ONE = b"devices:\n- {type: a, model: b, device: /dev/c}\n"


def test_an_interrupted_parse_leaves_the_child_serving(parser: ConfigParser) -> None:
    with pytest.raises(ConfigError, match="took longer than 2 s to parse"):
        parser.parse(_merge_bomb(), source="bomb.yml")
    child = parser.child_pid
    config = parser.parse(_ONE, source="ok.yml")
    assert [r.name for r in config.resources] == ["ska-sdp.org/a-b"]
    assert parser.child_pid == child, "interrupted in the child, not killed"


def test_a_dead_child_is_reported_then_replaced(parser: ConfigParser) -> None:
    parser.parse(_ONE, source="ok.yml")
    child = parser.child_pid
    assert child is not None
    os.kill(child, signal.SIGKILL)
    # Reported if the parse reaches the dead child; replaced at once if its death was
    # seen first. Either way the next parse has a new child.
    outcome = _outcome(parser, _ONE, "ok.yml")
    if isinstance(outcome, ConfigError):
        assert "made the parser process exit (code -9)" in str(outcome)
    assert len(parser.parse(_ONE, source="ok.yml").resources) == 1
    assert parser.child_pid not in (None, child)


async def test_a_parser_started_beside_grpc_threads_spawns_its_child(tmp_path: Path) -> None:
    """A fork beside gRPC's native threads can inherit their locks and never answer (it
    did, in CI); a parser first used while they run must spawn its child instead."""
    channel = grpc.aio.insecure_channel(f"unix://{tmp_path}/nobody.sock")
    try:
        with pytest.raises(asyncio.TimeoutError):  # gRPC's threads start on first use
            await asyncio.wait_for(channel.channel_ready(), 0.2)
        assert not only_python_threads()
        fresh = ConfigParser()
        try:
            config = await fresh.parse_async(_ONE, source="ok.yml")
            assert [r.name for r in config.resources] == ["ska-sdp.org/a-b"]
            assert fresh.child_pid is not None
            cmdline = Path(f"/proc/{fresh.child_pid}/cmdline").read_bytes()
            assert b"multiprocessing" in cmdline, "spawned, not forked"
        finally:
            fresh.close()
    finally:
        await channel.close()


_TIGHT_CAP = """
import sys
from supervisor.errors import ConfigError
from supervisor.parse_process import ConfigParser
parser = ConfigParser(memory_limit=4 << 20)
try:
    parser.parse(sys.stdin.buffer.read(), source="big.yml")
except ConfigError as error:
    print(error)
finally:
    parser.close()
"""


def test_a_parse_that_needs_too_much_memory_is_refused() -> None:
    """A fresh process (pytest's own holds freed heap a forked child could reuse), whose
    parser child may grow by 4 MB while 25,000 devices need about 10 MB."""
    child = subprocess.run(
        [sys.executable, "-c", _TIGHT_CAP], input=_HOSTILE["many-devices"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    out = child.stdout.decode()
    assert re.match(r"big\.yml: (needs more than \d+ MB to parse|made the parser)", out), out


_RESERVED = r"""
import mmap
from supervisor.parse_process import ConfigParser, only_python_threads
reserved = mmap.mmap(-1, 1 << 30)  # address space, as thread stacks and arenas reserve it
assert only_python_threads()  # so the child is forked, and inherits the reservation
parser = ConfigParser()
text = "devices:\n" + "".join(f"- {{type: a, model: b, device: /d{i}}}\n" for i in range(5000))
try:
    print(parser.parse(text.encode(), source="c.yml").device_count)
finally:
    parser.close()
"""


def test_the_memory_cap_is_on_top_of_what_the_child_inherits() -> None:
    """A fork inherits the parent's address space (a process that ran gRPC threads holds
    hundreds of MB of reserved arenas): a fixed 300 MB cap failed every parse there."""
    child = subprocess.run(
        [sys.executable, "-c", _RESERVED], capture_output=True, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout.decode() == "5000\n", child.stdout.decode()


def test_a_number_with_too_many_digits_is_named() -> None:
    with pytest.raises(ConfigError, match="a number has too many digits"):
        parse_config(_HOSTILE["5000-digit-integer"], source="n.yml")


# -- Allocate / GetPreferredAllocation over real gRPC ---------------------------------


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """The real supervisor, no kubelet: it serves its sockets while waiting for one."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="wdp-", dir="/tmp"))
    plugin_dir = root / "dp"
    config = root / "config.yaml"
    write_config(config, STAY)
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "--config", str(config),
         "--plugin-dir", str(plugin_dir), "--metrics-address", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    path = plugin_dir / socket_name_for(V1, str(plugin_dir))

    def serving() -> bool:
        assert process.poll() is None, "the supervisor exited"
        return path.exists()

    wait_until(serving, timeout=20, what=f"the supervisor serving {path}")
    yield path, process
    process.terminate()
    assert process.wait(timeout=10) == 0
    import shutil

    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stub(served: tuple[Path, subprocess.Popen[bytes]]) -> Iterator[pb_grpc.DevicePluginStub]:
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(f"unix://{served[0]}", options=options) as channel:
        yield pb_grpc.DevicePluginStub(channel)


def _allocate(ids: list[str]) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])


GOOD = "snaffler-v1-wibble1"
CLEAN = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _still_serves(stub: pb_grpc.DevicePluginStub, process: subprocess.Popen[bytes]) -> None:
    assert process.poll() is None, "the supervisor died"
    response = stub.Allocate(_allocate([GOOD]), timeout=10)
    assert response.container_responses[0].envs["WIDGET_VISIBLE_DEVICE_IDS"] == GOOD


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (pb.AllocateRequest(), None),
        (_allocate([]), grpc.StatusCode.INVALID_ARGUMENT),
        (_allocate(["nope"]), grpc.StatusCode.INVALID_ARGUMENT),
        (_allocate([f"unknown-{i}" for i in range(100_000)]), grpc.StatusCode.INVALID_ARGUMENT),
        (_allocate([GOOD] * 100_000), grpc.StatusCode.INVALID_ARGUMENT),
        (_allocate(["x" * 1_000_000]), grpc.StatusCode.INVALID_ARGUMENT),
        (_allocate(["x" * 5_000_000]), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (
            pb.AllocateRequest(
                container_requests=[pb.ContainerAllocateRequest(devices_ids=[GOOD])] * 10_000
            ),
            None,
        ),
    ],
    ids=[
        "empty",
        "no-ids",
        "unknown",
        "100k-unknown",
        "100k-duplicates",
        "1MB-id",
        "5MB-message",
        "10k-containers",
    ],
)
def test_allocate_requests(
    stub: pb_grpc.DevicePluginStub, served: tuple[Path, subprocess.Popen[bytes]],
    request_: pb.AllocateRequest, expected: grpc.StatusCode | None,
) -> None:  # fmt: skip
    if expected is None:
        stub.Allocate(request_, timeout=30)
    else:
        with pytest.raises(grpc.RpcError) as refused:
            stub.Allocate(request_, timeout=30)
        assert refused.value.code() == expected
        assert len(refused.value.details() or "") < 2000
    _still_serves(stub, served[1])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    available=st.lists(
        st.sampled_from([GOOD, "snaffler-v1-wibble2", "bogus", ""]) | st.text(max_size=20),
        max_size=20,
    ),
    must=st.lists(st.sampled_from([GOOD, "snaffler-v1-wibble2", "bogus"]), max_size=5),
    size=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    ids=st.lists(
        st.text(max_size=30) | st.sampled_from([GOOD, "snaffler-v1-wibble2"]), max_size=10
    ),
)
def test_fuzzed_requests_get_an_answer_or_a_clean_error(
    stub: pb_grpc.DevicePluginStub, served: tuple[Path, subprocess.Popen[bytes]],
    available: list[str], must: list[str], size: int, ids: list[str],
) -> None:  # fmt: skip
    preferred = pb.PreferredAllocationRequest(container_requests=[
        pb.ContainerPreferredAllocationRequest(
            available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size)
    ])  # fmt: skip

    def answered_or_clean(call: Callable[[], object]) -> None:
        try:
            call()
        except grpc.RpcError as error:
            assert error.code() in CLEAN, error  # noqa: PT017

    answered_or_clean(lambda: stub.GetPreferredAllocation(preferred, timeout=10))
    answered_or_clean(lambda: stub.Allocate(_allocate(ids), timeout=10))
    assert served[1].poll() is None


def test_garbage_on_the_socket_then_it_still_serves(
    stub: pb_grpc.DevicePluginStub, served: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    path, process = served
    before = Resources.of(process.pid)
    payloads = [
        b"\x00\xff garbage " * 10_000,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 9 + b"\x00" * 100,  # preface, bad frame
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + b"\x7f\xff\xff\x04\x00\x00\x00\x00\x00",  # huge SETTINGS
        b"",
    ]
    for payload in payloads:
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(path))
            raw.sendall(payload)
    idle = []
    for _ in range(200):  # idle connections that never speak
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(path))
        idle.append(raw)
    _still_serves(stub, process)
    for raw in idle:
        raw.close()
    wait_until(
        lambda: Resources.of(process.pid).fds <= before.fds,
        timeout=20,
        every=0.1,
        what=lambda: f"fds leaked: {before} -> {Resources.of(process.pid)}",
    )
    _still_serves(stub, process)
