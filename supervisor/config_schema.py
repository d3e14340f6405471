"""The config's rules, as a JSON Schema: checking a parsed tree and saying what is wrong.

Every rule for a single value (types, patterns, ranges, choices, required and unknown
keys) lives in ``config.schema.json`` (draft 2020-12, shipped in the package; the chart's
values.schema.json is generated from it by `schema_gen`). This module loads it once and
checks a tree against it: yes or no from `schema_check` (compiled, fast), and, only for a
tree that fails, every error from jsonschema, each turned into a sentence at the failing
field -- the schema's own "x-messages"/"x-message" text for that rule, or a generic one.

Knows nothing of files, YAML or lines (`config`), of what values mean (`config_document`),
nor of rules spanning several values (`resources`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from supervisor.errors import Path_
from supervisor.schema_check import TYPES, Compiler, Predicate, compile_pattern, json_equal

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

SCHEMA_FILE = "config.schema.json"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)", re.ASCII)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_KINDS = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "null",
}  # fmt: skip


def describe(value: object) -> str:
    """A short, safe description of a value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a number (too long to show)"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_duration(value: object) -> float | None:
    """``250ms``, ``30s``, ``1m30s``, ``2h`` or a number of seconds; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if not isinstance(value, str) or not value:
        return None
    parts = _DURATION_PART.findall(value)
    if "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _within_seconds(limit: float, value: object) -> bool:
    """The ``x-maxSeconds`` keyword: a duration string is at most `limit` seconds.

    Anything else passes (numbers have "maximum"; malformed strings fail "pattern").
    """
    seconds = parse_duration(value) if isinstance(value, str) else None
    return seconds is None or seconds <= limit


@functools.cache
def schema() -> dict[str, Any]:
    """The config's JSON Schema, as shipped in the package."""
    text = resources.files("supervisor").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _compiler() -> Compiler:
    extra = {"x-maxSeconds": lambda limit: functools.partial(_within_seconds, limit)}
    return Compiler(schema(), extra)


@functools.cache
def _is_valid(ref: str | None) -> Predicate:
    return _compiler().compile(schema() if ref is None else {"$ref": ref})


def problems(tree: Any, definition: str | None = None) -> list[tuple[Path_, str]]:
    """What is wrong with `tree` (or a value meant as ``$defs/<definition>``): path, sentence.

    One sentence per path, the first rule that fails there, in schema order.
    """
    ref = None if definition is None else f"#/$defs/{definition}"
    if _is_valid(ref)(tree):
        return []
    # The class, not evolve(): evolve picks the class the schema's "$schema" names.
    target = schema() if ref is None else {"$defs": schema()["$defs"], "$ref": ref}
    found: dict[Path_, str] = {}
    for error in _validator_class()(target).iter_errors(tree):
        for path, message in _explain(error):
            found.setdefault(path, message)
    return list(found.items())


def _explain(error: ValidationError) -> Iterator[tuple[Path_, str]]:
    path: Path_ = tuple(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path:
        path = (*path, str(error.instance))  # the offending key itself
    keyword = str(error.validator)
    where: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    template = where.get("x-messages", {}).get(keyword) or where.get("x-message")
    if template is not None and keyword not in ("required", "additionalProperties"):
        message = template.format(
            value=describe(error.instance),
            text=short(error.instance)
            if isinstance(error.instance, str)
            else describe(error.instance),
            keys=", ".join(where.get("properties", ())),
        )
    else:
        message = _generic(keyword, where, error)
    if keyword == "required":
        path = (*path, error.message)
        message = where.get("x-messages", {}).get(keyword, message)
    elif keyword == "additionalProperties":
        path = (*path, error.message)
    expected = _listed(where.get("type", []))
    if keyword == "type" and "string" in expected and TYPES["number"](error.instance):
        message += f' (quote it: {path[-1] if path else "value"}: "{error.instance}")'
    yield path, message


def _listed(types: str | list[str]) -> list[str]:
    return [types] if isinstance(types, str) else list(types)


def _generic(keyword: str, where: dict[str, Any], error: ValidationError) -> str:
    value = describe(error.instance)
    if keyword in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        kinds = _listed(where.get("type", "number"))
        if "minimum" in where and "maximum" in where and kinds in (["integer"], ["number"]):
            return (
                f"must be {_KINDS[kinds[0]]} from {where['minimum']} to {where['maximum']}, "
                f"not {value}"
            )
        if keyword == "type":
            return f"must be {' or '.join(_KINDS[k] for k in kinds)}, not {value}"
        bound = where[keyword]
        return f"must be {'at least' if 'inimum' in keyword else 'at most'} {bound}, not {value}"
    if keyword == "enum":
        options = [str(v) for v in where["enum"]]
        listed = " or ".join(options) if len(options) == 2 else "one of " + ", ".join(options)
        return f"must be {listed}, not {value}"
    if keyword == "required":
        return "required field is missing"
    if keyword == "additionalProperties":
        return f"unknown key; expected one of: {', '.join(where.get('properties', ()))}"
    if keyword == "maxItems":
        count = len(error.instance) if isinstance(error.instance, list) else "too many"
        return f"has {count} entries; at most {where['maxItems']} are supported"
    if keyword in ("maxLength", "minLength"):
        most = "at most" if keyword == "maxLength" else "at least"
        return f"must be {most} {where[keyword]} characters long"
    if keyword == "pattern":
        return f"must match {where['pattern']}, not {value}"
    if keyword == "x-maxSeconds":
        return f"must be at most {where[keyword]}s, not {value}"
    return f"does not fit the rule {keyword!r} of the config schema, not {value}"


# -- jsonschema, loaded only when a config is wrong -------------------------------------------
# Keywords that would put repr(instance) into a message are replaced: a value built from a
# few aliases can expand to billions of items, and the messages are ours anyway.


def _check_type(_: Any, instance: object, name: str) -> bool:
    return TYPES[name](instance)


@functools.cache
def _validator_class(*, skip_valid: bool = True) -> type[Validator]:
    """jsonschema's 2020-12 validator with our types, regex dialect and keywords.

    `skip_valid`: list items the compiled check accepts are not looked into again (one bad
    device in 10,000 is found in milliseconds, not the half second jsonschema takes).
    """
    from jsonschema import Draft202012Validator, ValidationError, validators

    def fail(why: str = "") -> ValidationError:
        return ValidationError(why)

    def type_(v: Validator, types: Any, instance: Any, _: Any) -> Iterator[ValidationError]:
        if not any(v.is_type(instance, t) for t in _listed(types)):
            yield fail()

    def enum(v: Validator, values: Any, instance: Any, _: Any) -> Iterator[ValidationError]:
        if not any(json_equal(instance, each) for each in values):
            yield fail()

    def pattern(v: Validator, regex: str, instance: Any, _: Any) -> Iterator[ValidationError]:
        if isinstance(instance, str) and compile_pattern(regex).search(instance) is None:
            yield fail()

    def bound(kind: str) -> Any:
        def check(v: Validator, limit: Any, instance: Any, _: Any) -> Iterator[ValidationError]:
            if v.is_type(instance, "number") and not (
                instance >= limit if kind == "minimum" else
                instance <= limit if kind == "maximum" else
                instance > limit if kind == "exclusiveMinimum" else
                instance < limit
            ):  # fmt: skip
                yield fail()

        return check

    def items_max(v: Validator, limit: int, instance: Any, _: Any) -> Iterator[ValidationError]:
        if v.is_type(instance, "array") and len(instance) > limit:
            yield fail()

    def props_min(v: Validator, limit: int, instance: Any, _: Any) -> Iterator[ValidationError]:
        if v.is_type(instance, "object") and len(instance) < limit:
            yield fail()

    def not_(v: Validator, negated: Any, instance: Any, _: Any) -> Iterator[ValidationError]:
        if v.evolve(schema=negated).is_valid(instance):
            yield fail()

    def required(v: Validator, names: Any, instance: Any, _: Any) -> Iterator[ValidationError]:
        if v.is_type(instance, "object"):
            yield from (fail(name) for name in names if name not in instance)

    def additional(v: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if not v.is_type(instance, "object"):
            return
        known = schema.get("properties", {})
        for key in instance:
            if isinstance(key, str) and key in known:
                continue
            if extra is False:
                yield fail(str(key))
            elif extra is not True:
                yield from v.descend(instance[key], extra, path=key)

    def items(v: Any, each: Any, instance: Any, _: Any) -> Iterator[ValidationError]:
        if v.is_type(instance, "array"):
            valid = _compiler().predicate(each)
            for index, item in enumerate(instance):
                if not valid(item):
                    yield from v.descend(item, each, path=index)

    def seconds(v: Validator, limit: float, instance: Any, _: Any) -> Iterator[ValidationError]:
        if not _within_seconds(limit, instance):
            yield fail()

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many(
        {name: functools.partial(_check_type, name=name) for name in TYPES}
    )
    keywords = {
        "type": type_, "enum": enum, "pattern": pattern, "maxItems": items_max,
        "minProperties": props_min, "not": not_, "required": required,
        "additionalProperties": additional, "x-maxSeconds": seconds,
        **{k: bound(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")},
        **({"items": items} if skip_valid else {}),
    }  # fmt: skip
    cls = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, keywords, type_checker=checker
    )
    Draft202012Validator.check_schema(schema())
    return cls  # type: ignore[no-any-return]
