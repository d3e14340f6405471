"""Resource names: accepted exactly when kubelet's IsExtendedResourceName accepts them."""

from __future__ import annotations

import pytest

from plugin_worker.k8s_names import extended_resource_name_problems

VALID = ["ska-sdp.org/snaffler-v1", "example.com/gpu", "a.b.c/x_y.z", "x/Y", f"{'a' * 242}.b/x"]
INVALID = [
    ("no-domain", "snaffler", "must have a domain prefix"),
    ("native", "kubernetes.io/gpu", "reserved"),
    ("native-subdomain", "foo.kubernetes.io/gpu", "reserved"),
    ("requests-prefix", "requests.example.com/gpu", "must not start with 'requests.'"),
    ("empty-domain", "/gpu", "prefix part must consist"),
    ("upper-domain", "Example.com/gpu", "prefix part must consist of lower case"),
    ("two-slashes", "a.com/b/c", "qualified name must consist"),
    ("empty-name", "example.com/", "name part must be non-empty"),
    ("bad-start", "example.com/-gpu", "must start and end with an alphanumeric"),
    ("name-too-long", "example.com/" + "a" * 64, "no more than 63 characters"),
    ("domain-too-long", f"{'a' * 243}.b/x", "no more than 253 characters"),
    ("final-newline", "example.com/gpu\n", "must start and end with an alphanumeric"),
    ("domain-final-newline", "example.com\n/gpu", "prefix part must consist"),
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name: str) -> None:
    assert extended_resource_name_problems(name) == []


@pytest.mark.parametrize(("name", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_names(name: str, message: str) -> None:
    problems = extended_resource_name_problems(name)
    assert any(message in p for p in problems), problems
