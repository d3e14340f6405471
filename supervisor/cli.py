"""The ``widget-supervisor`` command line: run, validate, resources, kubelet, demo.

Validates input at the boundary and turns domain errors into one clear message and
an exit code (1: bad config, 2: bad usage, 3: metrics address unavailable); users
never see a traceback for a mistake of theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dra_driver.objects import device_classes, physical_devices
from plugin_worker.api import (
    APIS,
    DEFAULT_PLUGIN_DIR,
    DEVICE_PLUGIN,
    DRA,
    UNHEALTHY,
    Device,
    ResourceSpec,
)
from supervisor import __version__, bundled, config_schema
from supervisor.cdi import DEFAULT_CDI_DIR
from supervisor.config import DEFAULT_DOMAIN, Config, read_config
from supervisor.dra_backend import DEFAULT_KUBELET_ROOT
from supervisor.errors import ConfigError
from supervisor.http import AddressError, parse_address
from supervisor.logs import setup_logging
from supervisor.parse_process import ConfigParser
from supervisor.podresources import DEFAULT_INTERVAL as DEFAULT_POD_INTERVAL

if TYPE_CHECKING:  # imported by the commands that run it: `validate` stays quick
    from supervisor.runtime import Supervisor

EXIT_CONFIG = 1
EXIT_ADDRESS = 3
F = TypeVar("F", bound=Callable[..., Any])


def _check_domain(ctx: click.Context, param: click.Parameter, value: str) -> str:
    problems = config_schema.problems(value, "domain")  # the rule a config's `domain:` follows
    if problems:
        raise click.BadParameter(f"{value!r}: {problems[0][1]}")
    return value


def _check_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_address(value)
    except AddressError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _config_option(help: str = "The devices file (YAML).", **kwargs: Any) -> Callable[[F], F]:
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="WIDGET_CONFIG",
        show_envvar=True,
        help=help,
        **kwargs,
    )


_domain_option = click.option(
    "--domain", default=DEFAULT_DOMAIN, show_default=True, envvar="WIDGET_DOMAIN",
    show_envvar=True, callback=_check_domain,
    help="Resource domain for configs without a top-level 'domain:'.",
)  # fmt: skip
_strict_option = click.option(
    "--strict-perms/--no-strict-perms", default=True, show_default=True,
    envvar="WIDGET_STRICT_PERMS", show_envvar=True,
    help="Refuse a config file writable by group/others or owned by another user.",
)  # fmt: skip


def _kubeconfig_option(what: str) -> Callable[[F], F]:
    return click.option(
        "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False, exists=True),
        default=None, envvar="WIDGET_KUBECONFIG", show_envvar=True,
        help=f"Kubernetes API access {what}  [default: the pod's service account, else "
        "$KUBECONFIG or ~/.kube/config]",
    )  # fmt: skip


_metrics_address_option = click.option(
    "--metrics-address", default="0.0.0.0:9464", show_default=True,
    envvar="WIDGET_METRICS_ADDRESS", show_envvar=True, callback=_check_address,
    help="HOST:PORT serving /metrics, /healthz and /readyz.",
)  # fmt: skip


def _serve_or_exit(supervisor: Supervisor) -> None:
    """Run until stopped; exit 1 on a config refused at start, 3 on a taken address."""
    try:
        asyncio.run(supervisor.run())
    except ConfigError as error:
        click.echo(f"error: invalid config; nothing started\n{error}", err=True)
        sys.exit(EXIT_CONFIG)
    except AddressError as error:
        click.echo(f"error: {error} (choose another --metrics-address)", err=True)
        sys.exit(EXIT_ADDRESS)


_node_option = click.option(
    "--node-name",
    "--node",
    "node_name",
    default=socket.gethostname,
    show_default="hostname",
    envvar="WIDGET_NODE_NAME",
    show_envvar=True,
    help="This node's name, matched against the config's 'nodes:' entries.",
)
_log_options = [
    click.option(
        "--log-level", type=click.Choice(["debug", "info", "warning", "error"],
        case_sensitive=False), default="info", show_default=True, envvar="WIDGET_LOG_LEVEL",
        show_envvar=True,
    ),
    click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
        envvar="WIDGET_LOG_FORMAT", show_envvar=True,
    ),
]  # fmt: skip


def _with_logging(f: F) -> F:
    for option in reversed(_log_options):
        f = option(f)
    return f


def _load_or_exit(
    path: Path, domain: str, strict_perms: bool, node_name: str | None = None
) -> Config:
    # Parsed in a child process, so that a hostile file is refused within seconds.
    parser = ConfigParser()
    try:
        data = read_config(path, strict_perms=strict_perms)
        return parser.parse(data, source=str(path), default_domain=domain, node_name=node_name)
    except ConfigError as error:
        click.echo(f"error: invalid config\n{error}", err=True)
        sys.exit(EXIT_CONFIG)
    finally:
        parser.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="widget-supervisor")
def main() -> None:
    """Advertise mock devices to kubelet: one device-plugin server per device type and model."""


@main.command()
@_config_option(required=True)
@click.option(
    "--plugin-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_PLUGIN_DIR,
    show_default=True, envvar="WIDGET_PLUGIN_DIR", show_envvar=True,
    help="kubelet's device-plugin directory (holds kubelet.sock).",
)  # fmt: skip
@_metrics_address_option
@click.option(
    "--register-timeout", type=click.FloatRange(min=0.1), default=12.0, show_default=True,
    envvar="WIDGET_REGISTER_TIMEOUT", show_envvar=True,
    help="Seconds to wait for kubelet to answer Register before retrying. kubelet dials "
    "the plugin for up to 10 s inside Register, so keep it above 10 on a real node.",
)  # fmt: skip
@click.option(
    "--cdi-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_CDI_DIR,
    show_default=True, envvar="WIDGET_CDI_DIR", show_envvar=True,
    help="Where CDI spec files are written for resources with 'cdi: true'.",
)  # fmt: skip
@click.option(
    "--pod-resources-socket", type=click.Path(path_type=Path, dir_okay=False), default=None,
    envvar="WIDGET_POD_RESOURCES_SOCKET", show_envvar=True,
    help="kubelet's pod-resources socket  [default: PLUGIN_DIR/../pod-resources/kubelet.sock]",
)  # fmt: skip
@click.option(
    "--pod-resources-interval", type=click.FloatRange(min=0), default=DEFAULT_POD_INTERVAL,
    show_default=True, envvar="WIDGET_POD_RESOURCES_INTERVAL", show_envvar=True,
    help="Seconds between pod-resources polls (also right after each Allocate); 0: off.",
)  # fmt: skip
@click.option(
    "--kubelet-root-dir", type=click.Path(path_type=Path, file_okay=False),
    default=str(DEFAULT_KUBELET_ROOT), show_default=True, envvar="WIDGET_KUBELET_ROOT_DIR",
    show_envvar=True,
    help="kubelet's root directory: DRA plugins register in its plugins_registry/ and serve "
    "in its plugins/ (api: dra only).",
)  # fmt: skip
@_kubeconfig_option("for DRA (ResourceSlices, ResourceClaims)")
@_node_option
@_with_logging
@_domain_option
@_strict_option
def run(
    config: Path,
    plugin_dir: Path,
    metrics_address: str,
    register_timeout: float,
    cdi_dir: Path,
    pod_resources_socket: Path | None,
    pod_resources_interval: float,
    kubelet_root_dir: Path,
    kubeconfig: Path | None,
    node_name: str,
    log_level: str,
    log_format: str,
    domain: str,
    strict_perms: bool,
) -> None:
    """Serve every resource in CONFIG to kubelet until SIGTERM/SIGINT; SIGHUP reloads."""
    from supervisor.runtime import Settings, Supervisor

    setup_logging(log_level, log_format)
    settings = Settings(
        config=config.absolute(),
        plugin_dir=plugin_dir.absolute(),
        metrics_address=metrics_address,
        domain=domain,
        strict_perms=strict_perms,
        register_timeout=register_timeout,
        node_name=node_name,
        cdi_dir=cdi_dir.absolute(),
        pod_resources_socket=(
            pod_resources_socket or plugin_dir.absolute().parent / "pod-resources" / "kubelet.sock"
        ).absolute(),
        pod_resources_interval=pod_resources_interval,
        kubelet_root=kubelet_root_dir.absolute(),
        kubeconfig=None if kubeconfig is None else kubeconfig.absolute(),
    )
    logging.getLogger(__name__).info("node name %s (for the config's nodes: entries)", node_name)
    _serve_or_exit(Supervisor(settings))


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _pod_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _parse_selector(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, str]:
    """``type=kwok,zone=a``: equality terms of a label selector (what KWOK's nodes carry)."""
    selector: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in value.split(","))):
        key, sep, wanted = term.partition("=")
        if not sep or not key or "!" in key:
            raise click.BadParameter(f"{term!r} is not KEY=VALUE", ctx=ctx, param=param)
        selector[key.strip()] = wanted.removeprefix("=").strip()  # key==value too
    return selector


@main.command()
@_config_option(required=True)
@click.option(
    "--node-selector", default="type=kwok", show_default=True, callback=_parse_selector,
    envvar="WIDGET_NODE_SELECTOR", show_envvar=True,
    help="Label selector (KEY=VALUE[,...]) of the simulated nodes; KWOK labels its own "
    "type=kwok. Empty: every node.",
)  # fmt: skip
@_kubeconfig_option("(Nodes, their status, Pods, ResourceSlices)")
@click.option("--qps", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              envvar="WIDGET_QPS", show_envvar=True,
              help="Client-side limit on writes per second to the API server.")  # fmt: skip
@click.option("--burst", type=click.IntRange(min=1), default=10, show_default=True,
              envvar="WIDGET_BURST", show_envvar=True,
              help="Writes allowed at once above --qps, as client-go's burst.")  # fmt: skip
@_metrics_address_option
@click.option(
    "--leader-elect/--no-leader-elect", default=False, show_default=True,
    envvar="WIDGET_LEADER_ELECT", show_envvar=True,
    help="Run as one of several replicas: the one holding a Lease writes, the others wait.",
)  # fmt: skip
@click.option(
    "--leader-election-namespace", default=None, envvar="WIDGET_LEADER_ELECTION_NAMESPACE",
    show_envvar=True,
    help="Namespace of the Lease  [default: the pod's, else default]",
)  # fmt: skip
@click.option(
    "--leader-election-id", default="widget-supervisor-simulate", show_default=True,
    envvar="WIDGET_LEADER_ELECTION_ID", show_envvar=True, help="Name of the Lease.",
)  # fmt: skip
@_with_logging
@_domain_option
@_strict_option
def simulate(
    config: Path,
    node_selector: dict[str, str],
    kubeconfig: Path | None,
    qps: float,
    burst: int,
    leader_elect: bool,
    leader_election_namespace: str | None,
    leader_election_id: str,
    metrics_address: str,
    log_level: str,
    log_format: str,
    domain: str,
    strict_perms: bool,
) -> None:
    """Carry CONFIG's mock devices onto every simulated (KWOK) node: their status capacity
    and allocatable, as a node agent on each would make the kubelet report them."""
    from supervisor.fleet_backend import FleetSettings
    from supervisor.runtime import Settings, Supervisor

    setup_logging(log_level, log_format)
    settings = Settings(
        config=config.absolute(), plugin_dir=Path(DEFAULT_PLUGIN_DIR),
        metrics_address=metrics_address, domain=domain, strict_perms=strict_perms,
        pod_resources_interval=0,
        kubeconfig=None if kubeconfig is None else kubeconfig.absolute(),
    )  # fmt: skip
    election = None
    if leader_elect:
        from fleet.leader import ElectionSettings

        election = ElectionSettings(
            name=leader_election_id,
            namespace=leader_election_namespace or _pod_namespace(),
            # The pod's name (downward API), else the host's: unique per replica.
            identity=os.environ.get("POD_NAME") or socket.gethostname(),
        )
    fleet = FleetSettings(selector=node_selector, qps=qps, burst=burst, election=election)
    _serve_or_exit(Supervisor(settings, fleet=fleet))


@main.command()
@_config_option(required=True)
@_node_option
@_domain_option
@_strict_option
def validate(config: Path, node_name: str, domain: str, strict_perms: bool) -> None:
    """Check CONFIG and summarise what it would advertise (exit 1 on any problem)."""
    loaded = _load_or_exit(config, domain, strict_perms, node_name)
    click.echo(f"{config}: OK: {len(loaded.resources)} resources, {loaded.device_count} devices")
    for spec in loaded.resources:
        count = len(spec.devices)
        via = "" if spec.api == DEVICE_PLUGIN else f" (api: {spec.api}, driver {loaded.dra_driver})"
        click.echo(f"  {spec.name}: {count} device{'' if count == 1 else 's'}{via}")


@main.command()
@_config_option(required=True)
@click.option("--output", "-o", type=click.Choice(["table", "json", "dra"]), default="table",
              show_default=True,
              help="dra: the DeviceClass manifests of the resources served with api: dra "
                   "(for kubectl apply -f -).")  # fmt: skip
@_node_option
@_domain_option
@_strict_option
def resources(config: Path, output: str, node_name: str, domain: str, strict_perms: bool) -> None:
    """Show the resources and device IDs CONFIG would advertise (on node NODE_NAME)."""
    loaded = _load_or_exit(config, domain, strict_perms, node_name)
    if output == "dra":
        classes = device_classes((s for s in loaded.resources if s.api == DRA), loaded.dra_driver)
        click.echo(yaml_documents(classes), nl=False)
        return
    if output == "json":
        document = {
            "domain": loaded.domain,
            "resources": [
                {
                    "name": spec.name,
                    "api": spec.api,
                    "envPrefix": spec.env_prefix,
                    "devices": [_device_json(d) for d in spec.devices],
                }
                for spec in loaded.resources
            ],
        }
        click.echo(json.dumps(document, indent=2))
        return
    rows = [("RESOURCE", "API", "DEVICE ID", "PATH", "HEALTH", "NUMA", "FAULT")]
    rows += [
        (s.name, s.api, ident, d.path, UNHEALTHY if s.failing else d.health, _text(d.numa),
         _fault(d))
        for s in loaded.resources
        for ident, d in _listed_devices(s)
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def yaml_documents(documents: list[dict[str, Any]]) -> str:
    """Kubernetes manifests as one YAML stream (``---`` between documents)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096  # a CEL expression stays on one line
    stream = io.StringIO()
    yaml.dump_all(documents, stream)
    return stream.getvalue()


def _listed_devices(spec: ResourceSpec) -> list[tuple[str, Device]]:
    """What identifies each device to kubelet: its ID, or in DRA its name in the pool."""
    if spec.api != DRA:
        return [(d.id, d) for d in spec.devices]
    shared = f" ({spec.replicas} shares)" if spec.replicas > 1 else ""
    return [(p.name + shared, p.device) for p in physical_devices(spec)]


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _fault(device: Device) -> str:
    fault = device.fault
    if fault is None:
        return "-"
    parts = [f"after {fault.unhealthy_after:g}s"]
    if fault.flap_period is not None:
        parts.append(f"flap {fault.flap_period:g}s")
    if fault.recover_after is not None:
        parts.append(f"for {fault.recover_after:g}s")
    return ", ".join(parts)


def _device_json(device: Device) -> dict[str, object]:
    """A device for `resources -o json`: the fields that are set."""
    document: dict[str, object] = {"id": device.id, "path": device.path, "health": device.health}
    if device.numa is not None:
        document["numa"] = device.numa
    if device.replica_of is not None:
        document["replicaOf"] = device.replica_of
    if device.fault is not None:
        document["faults"] = {k: v for k, v in asdict(device.fault).items() if v is not None}
    return document


@main.command()
@click.option(
    "--plugin-dir", type=click.Path(path_type=Path, file_okay=False), required=True,
    envvar="WIDGET_PLUGIN_DIR", show_envvar=True,
    help="Directory to serve kubelet.sock in (point `run --plugin-dir` at the same one).",
)  # fmt: skip
@click.option(
    "--allocate", "allocations", multiple=True, metavar="RESOURCE[=COUNT]",
    help="Once RESOURCE registers, allocate COUNT devices (default 1) and print the result.",
)  # fmt: skip
@_with_logging
def kubelet(
    plugin_dir: Path, allocations: tuple[str, ...], log_level: str, log_format: str
) -> None:
    """A local kubelet stand-in: registration server, ListAndWatch, Allocate, live table."""
    from supervisor.demo import run_kubelet

    setup_logging(log_level, log_format)
    wanted: dict[str, int] = {}
    for item in allocations:
        name, _, count = item.partition("=")
        if count and not count.isdigit():
            raise click.BadParameter(f"{item!r}: COUNT must be a number", param_hint="--allocate")
        wanted[name] = int(count or 1)
    asyncio.run(run_kubelet(plugin_dir.absolute(), wanted))


@main.command()
@click.argument("name", required=False)
def examples(name: str | None) -> None:
    """List the bundled example configs, or print the one called NAME."""
    if name is None:
        for example in bundled.example_names():
            click.echo(f"{example:<22} {bundled.summary(example)}".rstrip())
        return
    try:
        click.echo(bundled.example_text(name), nl=False)
    except KeyError as error:
        raise click.BadParameter(str(error.args[0]), param_hint="NAME") from None


@main.command()
@_config_option(
    help="The devices file (YAML); default: the bundled multi.yml, copied into the "
    "demo's temp dir so that you can edit it live."
)
@click.option(
    "--metrics-address", default="127.0.0.1:9464", show_default=True, callback=_check_address,
    help="HOST:PORT for the demo's /metrics and /healthz.",
)  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds instead of waiting for Ctrl-C.")  # fmt: skip
@click.option(
    "--api", type=click.Choice(APIS), default=DEVICE_PLUGIN, show_default=True,
    help="dra: serve through DRA, against local API-server and kubelet stand-ins "
    f"(default config: the bundled {bundled.DRA_DEMO_EXAMPLE}).",
)  # fmt: skip
@_with_logging
def demo(
    config: Path | None,
    metrics_address: str,
    duration: float | None,
    api: str,
    log_level: str,
    log_format: str,
) -> None:
    """The supervisor and the kubelet stand-in together in a temp dir, with a sample allocation."""
    from supervisor.demo import run_demo

    setup_logging(log_level, log_format)
    default = bundled.DRA_DEMO_EXAMPLE if api == DRA else bundled.DEMO_EXAMPLE
    with contextlib.ExitStack() as stack:
        path = config or stack.enter_context(bundled.example_file(default))
        node: str | None = None
        if api == DRA:
            from supervisor.demo_dra import NODE

            node = NODE
        loaded = _load_or_exit(path, DEFAULT_DOMAIN, strict_perms=False, node_name=node)
        names = [spec.name for spec in loaded.resources]
        copy = config is None
        if api == DRA and not any(spec.api == DRA for spec in loaded.resources):
            click.echo(f"error: no resource of {path} is served through DRA; add `api: dra` "
                       "at its top level", err=True)  # fmt: skip
            sys.exit(EXIT_CONFIG)
        try:
            if api == DRA:
                from supervisor.demo_dra import run_dra_demo

                asyncio.run(run_dra_demo(path.absolute(), loaded, metrics_address, duration,
                                         copy=copy))  # fmt: skip
            else:
                asyncio.run(run_demo(path.absolute(), names, metrics_address, duration, copy=copy))
        except AddressError as error:
            click.echo(f"error: {error} (choose another --metrics-address)", err=True)
            sys.exit(EXIT_ADDRESS)
        except KeyboardInterrupt:
            pass
