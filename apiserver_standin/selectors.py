"""Label and field selectors: parsing the query strings and matching objects.

Label selectors follow k8s.io/apimachinery/pkg/labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
`k notin (a,b)`, `k`, `!k`, joined by commas (AND). `!=` and `notin` also match objects
without the label, as upstream. Field selectors (k8s.io/apimachinery/pkg/fields) support
`=`, `==` and `!=` on the fields a resource type declares selectable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from apiserver_standin.errors import bad_request

Matcher = Callable[[Mapping[str, str]], bool]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.op:
            case "exists":
                return present
            case "!":
                return not present
            case "=" | "in":
                return present and labels[self.key] in self.values
            case _:  # "!=", "notin"
                return not present or labels[self.key] not in self.values


_SET = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQ = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(?P<not>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


def _split(selector: str) -> list[str]:
    """Split on the commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_labels(selector: str) -> list[Requirement]:
    requirements = []
    for term in _split(selector):
        if m := _SET.match(term):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append(Requirement(m["key"], m["op"], values))
        elif m := _EQ.match(term):
            op = "!=" if m["op"] == "!=" else "="
            requirements.append(Requirement(m["key"], op, frozenset({m["value"]})))
        elif m := _EXISTS.match(term):
            requirements.append(Requirement(m["key"], "!" if m["not"] else "exists"))
        else:
            raise bad_request(
                f"unable to parse requirement: found '{term.strip()}', "
                "expected: in, notin, =, ==, !=, gt, lt"
            )
    return requirements


def label_matcher(selector: str) -> Matcher:
    requirements = parse_labels(selector)
    return lambda labels: all(r.matches(labels) for r in requirements)


def field_matcher(selector: str, known: set[str]) -> Matcher:
    """Match a field set; a field the type does not declare is a 400, as upstream."""
    terms: list[tuple[str, bool, str]] = []
    for term in _split(selector):
        m = _EQ.match(term)
        if m is None:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term.strip()}'")
        if m["key"] not in known:
            raise bad_request(f"field label not supported: {m['key']}")
        terms.append((m["key"], m["op"] != "!=", m["value"]))
    return lambda fields: all((fields.get(k, "") == v) is eq for k, eq, v in terms)


def matchers(labels: str, fields: str, known_fields: set[str]) -> tuple[Matcher, Matcher]:
    """Both matchers for a request; ApiError (400) if either selector is malformed."""
    return label_matcher(labels), field_matcher(fields, known_fields)
