"""Kubernetes naming rules that decide whether kubelet accepts a resource name.

Ported from k8s.io/apimachinery (`IsQualifiedName`, `IsDNS1123Subdomain`) and
k8s.io/kubernetes pkg/apis/core/v1/helper (`IsExtendedResourceName`), so that a
name we accept is exactly a name kubelet's Register accepts.
"""

from __future__ import annotations

import re

DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_NATIVE_PREFIX = "kubernetes.io/"
_REQUESTS_PREFIX = "requests."


def dns1123_subdomain_problems(value: str) -> list[str]:
    problems = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        problems.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):  # fullmatch: `$` would allow a final "\n"
        problems.append(
            "must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return problems


def qualified_name_problems(value: str) -> list[str]:
    """Problems of `value` as a Kubernetes qualified name (``[prefix/]name``)."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        problems: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            problems = ["prefix part must be non-empty"]
        else:
            problems = [f"prefix part {p}" for p in dns1123_subdomain_problems(prefix)]
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
            "with an optional DNS subdomain prefix and '/'"
        ]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        problems.append(f"name part must be no more than {QUALIFIED_NAME_MAX} characters")
    if name and not _QUALIFIED_NAME.fullmatch(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return problems


def extended_resource_name_problems(name: str) -> list[str]:
    """Why kubelet would reject `name` as a device-plugin resource; empty if it accepts it."""
    if "/" not in name:
        return ["must have a domain prefix, e.g. example.com/widget"]
    if _NATIVE_PREFIX in name:
        return ["the kubernetes.io domain is reserved for native resources"]
    if name.startswith(_REQUESTS_PREFIX):
        return [f"must not start with {_REQUESTS_PREFIX!r}"]
    # kubelet checks the name as a quota key, "requests.<name>", which is what
    # bounds the domain to 244 characters.
    return qualified_name_problems(_REQUESTS_PREFIX + name)
