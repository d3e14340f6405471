"""Bad values stop `helm template` with a message that names the problem.

values.schema.json catches wrong shapes and types; templates/validate.yaml catches what spans
several keys. Each case checks the exit code and the message the user would read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from chart_render import helm_template

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
]

FAIL_CASES = [
    pytest.param(
        {"config": {"devices": []}},
        ["config.devices is empty and existingConfigMap is not set"],
        id="no-devices",
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
        ["config.devices[1] repeats config.devices[0]", "/dev/wibble1"],
        id="duplicate-device",
    ),
    pytest.param(
        {"config": {"devices": [{"type": "t" * 40, "model": "m" * 30, "device": "/dev/wibble1"}]}},
        ["config.devices[0]", "at most 63"],
        id="resource-name-too-long",
    ),
    pytest.param(
        {"config": {"domain": "kubernetes.io"}},
        ["reserved by Kubernetes"],
        id="reserved-domain",
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
        pytest.param(
            {
                "config": {
                    "devices": [
                        {"type": "a", "model": "b", "device": "/dev/x"},
                        {"type": "c", "model": "d", "device": "/dev/x"},
                    ]
                }
            },
            id="same-path-two-resources",
        ),
    ],
)
def test_good_edge_values_are_accepted(
    helm: str, tmp_path: Path, values: dict[str, object]
) -> None:
    code, stderr = _render_with(helm, tmp_path, values)
    assert code == 0, stderr
