"""Bad values stop `helm template` with a message that names the problem.

values.schema.json catches wrong shapes and types; templates/validate.yaml catches what spans
several keys. Each case checks the exit code and the message the user would read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from chart_render import helm_template

DEVICE = {"type": "snaffler", "model": "v1", "device": "/dev/wibble1"}
RESOURCE = {"type": "snaffler", "model": "v1"}

SCHEMA_CASES = [
    pytest.param(
        {"config": {"devices": [{"model": "v1", "device": "/dev/wibble1"}]}},
        ["config.devices.0", "type"],
        id="device-without-type",
    ),
    pytest.param(
        {"config": {"devices": [{"type": "snaffler", "model": 2, "device": "/dev/w"}]}},
        ["config.devices.0.model", "string"],
        id="numeric-model",
    ),
    pytest.param(
        {"config": {"devices": [{"type": "snaf/fler", "model": "v1", "device": "/dev/w"}]}},
        ["config.devices.0.type", "pattern"],
        id="slash-in-type",
    ),
    pytest.param(
        {"config": {"devices": [{"type": "snaffler", "model": "v1", "device": "wibble1"}]}},
        ["config.devices.0.device", "pattern"],
        id="relative-device-path",
    ),
    pytest.param(
        {"config": {"devices": [{"type": "s", "model": "v1", "device": "/dev/w", "modle": "x"}]}},
        ["config.devices.0", "modle"],
        id="misspelt-device-key",
    ),
    pytest.param(
        {"config": {"domain": "Example.ORG"}},
        ["config.domain", "pattern"],
        id="upper-case-domain",
    ),
    pytest.param(
        {"config": {"domain": "kubernetes.io"}},
        ["config.domain: Must not validate the schema (not)"],
        id="reserved-domain",
    ),
    pytest.param(
        {"supervisor": {"metricsPort": "9464x"}},
        ["supervisor.metricsPort", "integer"],
        id="non-integer-port",
    ),
    pytest.param(
        {"supervisor": {"metricsPort": 70000}},
        ["supervisor.metricsPort", "65535"],
        id="port-out-of-range",
    ),
    pytest.param(
        {"metrics": {"service": {"port": 9.5}}},
        ["metrics.service.port", "integer"],
        id="fractional-service-port",
    ),
    pytest.param(
        {"supervisor": {"logLevel": "verbose"}},
        ["supervisor.logLevel", "debug"],
        id="unknown-log-level",
    ),
    pytest.param(
        {"tolerations": {"key": "dedicated"}},
        ["tolerations", "array"],
        id="tolerations-not-a-list",
    ),
    pytest.param(
        {"image": {"repository": ""}},
        ["image.repository"],
        id="empty-image-repository",
    ),
    pytest.param(
        {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
        ["metrics.serviceMonitor.enabled", "boolean"],
        id="switch-not-boolean",
    ),
    pytest.param(
        {"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
        ["metrics.serviceMonitor.interval", "pattern"],
        id="bad-scrape-interval",
    ),
    pytest.param(
        {"nodeSelectr": {"a": "b"}},
        ["nodeSelectr"],
        id="misspelt-top-level-key",
    ),
    # The realistic-mock keys of the config format (supervisor/config_schema.py).
    pytest.param(
        {"config": {"devices": [{**DEVICE, "health": "Sick"}]}},
        ["config.devices.0.health", "Healthy"],
        id="unknown-health",
    ),
    pytest.param(
        {"config": {"devices": [{**DEVICE, "numa": 1024}]}},
        ["config.devices.0.numa", "1023"],
        id="numa-out-of-range",
    ),
    pytest.param(
        {"config": {"devices": [{**DEVICE, "numa": "0"}]}},
        ["config.devices.0.numa", "integer"],
        id="numa-as-string",
    ),
    pytest.param(
        {"config": {"devices": [{**DEVICE, "faults": {"unhealthyAfter": "30 sec"}}]}},
        ["config.devices.0.faults.unhealthyAfter", "pattern"],
        id="bad-duration",
    ),
    pytest.param(
        {"config": {"devices": [{**DEVICE, "faults": {"unhealthyAfter": -1}}]}},
        ["config.devices.0.faults.unhealthyAfter", "0"],
        id="negative-duration",
    ),
    pytest.param(
        {"config": {"devices": [{**DEVICE, "faults": {"flapPeriod": 0}}]}},
        ["config.devices.0.faults.flapPeriod", "0"],
        id="zero-flap-period",
    ),
    pytest.param(
        {"config": {"devices": [{**DEVICE, "faults": {}}]}},
        ["config.devices.0.faults", "1"],
        id="empty-faults",
    ),
    pytest.param(
        {"config": {"devices": [{**DEVICE, "faults": {"recoverAfer": "1m"}}]}},
        ["config.devices.0.faults", "recoverAfer"],
        id="misspelt-fault-key",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "replicas": 0}]}},
        ["config.resources.0.replicas", "1"],
        id="zero-replicas",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "replicas": 101}]}},
        ["config.resources.0.replicas", "100"],
        id="too-many-replicas",
    ),
    pytest.param(
        {"config": {"resources": [{"type": "snaffler", "replicas": 2}]}},
        ["config.resources.0", "model"],
        id="resource-without-model",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "preferredAllocation": "random"}]}},
        ["config.resources.0.preferredAllocation", "packed"],
        id="unknown-policy",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "renameShared": "yes"}]}},
        ["config.resources.0.renameShared", "boolean"],
        id="flag-not-boolean",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "envs": {"WIDGET_VISIBLE_DEVICES": "x"}}]}},
        ["config.resources.0.envs", "WIDGET_VISIBLE_DEVICES"],
        id="reserved-env",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "envs": {"MODE": 1}}]}},
        ["config.resources.0.envs.MODE", "string"],
        id="env-value-not-string",
    ),
    pytest.param(
        {
            "config": {
                "resources": [{**RESOURCE, "mounts": [{"hostPath": "/a", "containerPath": "b"}]}]
            }
        },
        ["config.resources.0.mounts.0.containerPath", "pattern"],
        id="relative-mount",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "annotations": {"a b": "c"}}]}},
        ["config.resources.0.annotations", "a b"],
        id="bad-annotation-key",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "allocate": {"failureRate": 1.5}}]}},
        ["config.resources.0.allocate.failureRate", "1"],
        id="failure-rate-above-one",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "allocate": {"delay": 301}}]}},
        ["config.resources.0.allocate.delay", "300"],
        id="delay-too-long",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "allocate": {"seed": 1.5}}]}},
        ["config.resources.0.allocate.seed", "integer"],
        id="fractional-seed",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "alocate": {}}]}},
        ["config.resources.0", "alocate"],
        id="misspelt-resource-key",
    ),
    pytest.param(
        {"config": {"nodes": [{"devices": [DEVICE]}]}},
        ["config.nodes.0", "match"],
        id="node-without-match",
    ),
    pytest.param(
        {"config": {"nodes": [{"match": "gpu-*", "mode": "merge"}]}},
        ["config.nodes.0.mode", "replace"],
        id="unknown-node-mode",
    ),
    pytest.param(
        {"config": {"nodes": [{"match": "gpu-*", "devices": [{**DEVICE, "numa": -1}]}]}},
        ["config.nodes.0.devices.0.numa", "0"],
        id="node-device-checked-too",
    ),
    pytest.param(
        {"podResources": {"interval": -1}},
        ["podResources.interval", "0"],
        id="negative-pod-resources-interval",
    ),
    pytest.param(
        {"cdi": {"enabled": True, "hostPath": "var/run/cdi"}},
        ["cdi.hostPath", "pattern"],
        id="relative-cdi-dir",
    ),
    pytest.param({"dra": {"enabled": "yes"}}, ["dra.enabled", "boolean"], id="dra-not-boolean"),
    pytest.param(
        {"dra": {"deviceClasses": {"enable": True}}},
        ["dra.deviceClasses", "enable"],
        id="misspelt-dra-switch",
    ),
    pytest.param(
        {"config": {"api": "grpc"}},
        ["config.api", "device-plugin"],
        id="unknown-api",
    ),
    pytest.param(
        {"tests": {"deviceClass": "Snaffler_V1"}},
        ["tests.deviceClass", "pattern"],
        id="device-class-not-a-dns-subdomain",
    ),
    pytest.param(
        {"serviceAccount": {"create": True, "nmae": "x"}},
        ["serviceAccount", "nmae"],
        id="misspelt-service-account-key",
    ),
    pytest.param({"rbac": {"create": "true"}}, ["rbac.create", "boolean"], id="rbac-not-boolean"),
]

FAIL_CASES = [
    pytest.param(
        {"config": {"devices": []}},
        ["config.devices is empty, no config.nodes entry lists devices"],
        id="no-devices",
    ),
    pytest.param(
        {"config": {"devices": [], "nodes": [{"match": "gpu-*"}]}},
        ["config.devices is empty, no config.nodes entry lists devices"],
        id="no-devices-on-any-node",
    ),
    pytest.param(
        {
            "config": {
                "nodes": [
                    {"match": "x", "devices": [{**DEVICE, "type": "t" * 40, "model": "m" * 30}]}
                ]
            }
        },
        ["config.nodes[0].devices[0].type/model", "has 71 characters; kubelet allows at most 63"],
        id="node-resource-name-too-long",
    ),
    pytest.param(
        {"config": {"resources": [{**RESOURCE, "cdi": True}]}},
        ["config.resources[0] (snaffler v1) sets cdi: true, but cdi.enabled is false"],
        id="cdi-resource-without-cdi-mount",
    ),
    pytest.param(
        {"config": {"nodes": [{"match": "x", "resources": [{**RESOURCE, "cdi": True}]}]}},
        ["config.nodes[0].resources[0] (snaffler v1) sets cdi: true"],
        id="node-cdi-resource-without-cdi-mount",
    ),
    pytest.param(
        {
            "config": {
                "devices": [
                    {"type": "snaffler", "model": "v1", "device": "/dev/wibble1"},
                    {"type": "snaffler", "model": "v1", "device": "/dev/wibble1"},
                ]
            }
        },
        ["config.devices[1].device: '/dev/wibble1' is already listed at devices[0]"],
        id="duplicate-device",
    ),
    pytest.param(
        {
            "config": {
                "devices": [
                    {"type": "a", "model": "b", "device": "/dev/x"},
                    {"type": "c", "model": "d", "device": "/dev/x"},
                ]
            }
        },
        ["config.devices[1].device: '/dev/x' is already listed at devices[0]"],
        id="same-path-two-resources",
    ),
    pytest.param(
        {"config": {"devices": [{"type": "t" * 40, "model": "m" * 30, "device": "/dev/wibble1"}]}},
        ["config.devices[0]", "at most 63"],
        id="resource-name-too-long",
    ),
    pytest.param(
        {"metrics": {"serviceMonitor": {"enabled": True}}},
        ["metrics.serviceMonitor.enabled=true needs metrics.service.enabled=true"],
        id="service-monitor-without-service",
    ),
    pytest.param(
        {"existingConfigMap": "mine"},
        ["Set tests.resource"],
        id="existing-configmap-without-test-resource",
    ),
]


def _render_with(helm: str, tmp_path: Path, values: dict[str, object]) -> tuple[int, str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    done = helm_template(helm, values=[path])
    return done.returncode, done.stderr


@pytest.mark.parametrize(("values", "expected"), SCHEMA_CASES)
def test_schema_rejects_bad_values(
    helm: str, tmp_path: Path, values: dict[str, object], expected: list[str]
) -> None:
    code, stderr = _render_with(helm, tmp_path, values)
    assert code != 0, f"helm accepted {values}"
    assert "values don't meet the specifications of the schema" in stderr, stderr
    for fragment in expected:
        assert fragment in stderr, stderr


@pytest.mark.parametrize(("values", "expected"), FAIL_CASES)
def test_fail_checks_explain_the_fix(
    helm: str, tmp_path: Path, values: dict[str, object], expected: list[str]
) -> None:
    code, stderr = _render_with(helm, tmp_path, values)
    assert code != 0, f"helm accepted {values}"
    assert "validate.yaml" in stderr, stderr
    for fragment in expected:
        assert fragment in stderr, stderr


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"existingConfigMap": "mine", "tests": {"enabled": False}}, id="no-tests"),
        pytest.param({"config": {"domain": "kubernetes.io.example.org"}}, id="lookalike-domain"),
        pytest.param(
            {"metrics": {"service": {"enabled": True}, "serviceMonitor": {"enabled": True}}},
            id="monitor-with-service",
        ),
        # A device listed in several `nodes` entries (and at the top level): which entries apply
        # depends on the node, so the chart leaves duplicates there to `widget-supervisor
        # validate --node-name`.
        pytest.param(
            {
                "config": {
                    "devices": [DEVICE],
                    "nodes": [
                        {"match": "gpu-*", "devices": [{**DEVICE, "device": "/dev/g"}]},
                        {
                            "match": "edge-*",
                            "mode": "replace",
                            "devices": [{**DEVICE, "device": "/dev/g"}],
                        },
                        {"match": "big-*", "mode": "replace", "devices": [DEVICE]},
                    ],
                }
            },
            id="device-in-several-node-entries",
        ),
        pytest.param(
            {"config": {"devices": [], "nodes": [{"match": "gpu-*", "devices": [DEVICE]}]}},
            id="devices-only-per-node",
        ),
        pytest.param(
            {
                "config": {
                    "devices": [{**DEVICE, "faults": {"unhealthyAfter": 0, "flapPeriod": 0.5}}],
                    "resources": [{**RESOURCE, "allocate": {"delay": "1m30s", "seed": 0}}],
                }
            },
            id="durations-as-numbers-and-strings",
        ),
        pytest.param(
            {
                "cdi": {"enabled": True, "hostPath": "/etc/cdi"},
                "config": {"resources": [{**RESOURCE, "cdi": True}]},
            },
            id="cdi-resource-with-cdi-mount",
        ),
        pytest.param({"podResources": {"interval": 0}}, id="pod-resources-monitor-off"),
        # DRA mode mounts the CDI directory anyway: a device-plugin resource may use it.
        pytest.param(
            {
                "config": {
                    "api": "dra",
                    "devices": [DEVICE, {**DEVICE, "type": "gizmo", "device": "/dev/g"}],
                    "resources": [
                        {"type": "gizmo", "model": "v1", "api": "device-plugin", "cdi": True}
                    ],
                }
            },
            id="cdi-resource-beside-dra",
        ),
        pytest.param(
            {
                "existingConfigMap": "mine",
                "dra": {"enabled": True},
                "tests": {"deviceClass": "snaffler-v1.ska-sdp.org"},
            },
            id="existing-dra-configmap-with-test-class",
        ),
        pytest.param(
            {
                "config": {
                    "api": "dra",
                    "domain": "d" * 64,
                    "dra": {"driver": "widgets.example"},
                    "devices": [DEVICE],
                }
            },
            id="long-domain-with-own-driver",
        ),
    ],
)
def test_good_edge_values_are_accepted(
    helm: str, tmp_path: Path, values: dict[str, object]
) -> None:
    code, stderr = _render_with(helm, tmp_path, values)
    assert code == 0, stderr
