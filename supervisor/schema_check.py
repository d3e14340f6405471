"""A fast yes/no check of a parsed tree against a JSON Schema, exact for the keywords it knows.

jsonschema explains what is wrong, but it interprets the schema anew for every value:
about 50 us per device, half a second for a 10,000-device file on every reload. Knowing
*whether* a tree is valid needs far less. `compile_schema` turns a schema, once, into
plain closures with jsonschema's meaning for each keyword it supports, using the same type
checks and regex dialect (`TYPES`, `compile_pattern`) that `config_schema` gives
jsonschema; a schema using any other keyword is refused, so the schema cannot grow a rule
this check would ignore. It says only valid or not: for a tree that is not, jsonschema
itself finds and explains every error. `tests/test_config_schema.py` checks that both
agree on generated documents.

Owns no rules: every rule is read from the schema it is given.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Any], bool]
KeywordCompiler = Callable[[Any], Predicate]

TYPES: dict[str, Predicate] = {
    "string": lambda x: isinstance(x, str),
    # JSON has no booleans among its numbers, and YAML's 1.0 is not a whole number here.
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "null": lambda x: x is None,
}
ANNOTATIONS = frozenset(
    ("$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples")
)
_STRING = frozenset(("pattern", "minLength", "maxLength"))
_NUMBER = frozenset(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
_OBJECT = frozenset(
    ("properties", "required", "additionalProperties", "propertyNames", "minProperties")
)
_ARRAY = frozenset(("items", "maxItems", "minItems"))


class UnsupportedSchemaError(ValueError):
    """The schema uses a keyword this check does not implement."""


@functools.cache
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` with the meaning JSON Schema (ECMA 262) and Go's RE2 give it.

    Python's ``$`` also matches before a final newline ("abc\\n" would pass ``^abc$``),
    so an unescaped ``$`` outside a character class becomes ``\\Z``; ASCII mode keeps
    ``\\S`` and friends to ASCII, as in RE2.
    """
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out), re.ASCII)


def json_equal(one: object, two: object) -> bool:
    """Equality of JSON scalars: true is not 1, 1 is 1.0."""
    if isinstance(one, bool) or isinstance(two, bool):
        return type(one) is type(two) and one == two
    return one == two


def _only(schema: Any, keywords: frozenset[str]) -> bool:
    """`schema` is a mapping with no keywords but `keywords` (and annotations)."""
    return isinstance(schema, dict) and all(
        k in keywords or k in ANNOTATIONS or k.startswith("x-") for k in schema
    )


def _all(checks: list[Predicate]) -> Predicate:
    if not checks:
        return lambda _: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda x: first(x) and second(x)

    def check(value: Any) -> bool:
        return all(c(value) for c in checks)

    return check


class Compiler:
    """Compiles parts of one root schema (references resolve against it)."""

    def __init__(self, root: Mapping[str, Any], extra: Mapping[str, KeywordCompiler]) -> None:
        self._root = root
        self._extra = extra
        self._refs: dict[str, Predicate] = {}
        self._done: dict[int, tuple[Any, Predicate]] = {}

    def predicate(self, schema: Any) -> Predicate:
        """`compile`, once per subschema of the root (held, so that its id stays its own)."""
        done = self._done.get(id(schema))
        if done is None:
            done = self._done[id(schema)] = (schema, self.compile(schema))
        return done[1]

    def compile(self, schema: Any) -> Predicate:
        if schema is True or schema == {}:
            return lambda _: True
        if schema is False:
            return lambda _: False
        if not isinstance(schema, dict):
            raise UnsupportedSchemaError(f"not a schema: {schema!r}")
        keys = set(schema) - ANNOTATIONS - {k for k in schema if k.startswith("x-")}
        keys |= set(self._extra) & set(schema)
        unknown = keys - _STRING - _NUMBER - _OBJECT - _ARRAY - set(self._extra)
        unknown -= {"type", "enum", "allOf", "anyOf", "not", "$ref"}
        if unknown:
            raise UnsupportedSchemaError(f"keywords not supported: {sorted(unknown)}")
        checks, schema, keys = self._typed(schema, keys)
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        if set(schema) & _STRING:
            checks.append(self._string([schema], strict=False))
        if keys & _NUMBER:
            checks.append(self._number(schema))
        if keys & _OBJECT:
            checks.append(self._object(schema))
        if keys & _ARRAY:
            checks.append(self._array(schema))
        checks += [self._extra[k](schema[k]) for k in self._extra if k in schema]
        return _all(checks + self._applicators(schema))

    def _typed(
        self, schema: dict[str, Any], keys: set[str]
    ) -> tuple[list[Predicate], dict[str, Any], set[str]]:
        """The type test, fused with the keywords of that type where it is a single one
        (the hot path of a devices list); returns the schema and keywords left to compile."""
        checks = []
        if schema.get("type") == "string":
            # One closure for the type, the string keywords and any allOf branch of only
            # string keywords (a device path's two patterns).
            merged = [b for b in schema.get("allOf", ()) if _only(b, _STRING)]
            checks.append(self._string([schema, *merged], strict=True))
            rest = [b for b in schema.get("allOf", ()) if not _only(b, _STRING)]
            schema = {k: v for k, v in schema.items() if k not in _STRING | {"type", "allOf"}}
            if rest:
                schema["allOf"] = rest
        elif schema.get("type") in ("object", "array") and keys & (_OBJECT | _ARRAY):
            kind, test = schema["type"], TYPES[schema["type"]]
            schema = {k: v for k, v in schema.items() if k != "type"}
            inner = self._object(schema) if kind == "object" else self._array(schema)
            checks.append(lambda x: test(x) and inner(x))
            keys = keys - _OBJECT - _ARRAY
        elif "type" in schema:
            checks.append(self._type(schema["type"]))
        return checks, schema, keys

    def _applicators(self, schema: dict[str, Any]) -> list[Predicate]:
        checks = []
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"]))
        if "allOf" in schema:
            checks.append(_all([self.compile(s) for s in schema["allOf"]]))
        if "anyOf" in schema:
            options = [self.compile(s) for s in schema["anyOf"]]
            checks.append(lambda x: any(o(x) for o in options))
        if "not" in schema:
            negated = self.compile(schema["not"])
            checks.append(lambda x: not negated(x))
        return checks

    @staticmethod
    def _type(names: str | list[str]) -> Predicate:
        tests = [TYPES[n] for n in ([names] if isinstance(names, str) else names)]
        return tests[0] if len(tests) == 1 else lambda x: any(t(x) for t in tests)

    @staticmethod
    def _enum(values: list[Any]) -> Predicate:
        if not all(v is None or isinstance(v, str | int | float) for v in values):
            raise UnsupportedSchemaError("enum of anything but scalars")
        return lambda x: any(json_equal(x, v) for v in values)

    @staticmethod
    def _string(schemas: list[dict[str, Any]], *, strict: bool) -> Predicate:
        """`schemas`' string keywords together; `strict`: and the value is a string."""
        searches = [compile_pattern(s["pattern"]).search for s in schemas if "pattern" in s]
        low = max(s.get("minLength", 0) for s in schemas)
        high = min((s["maxLength"] for s in schemas if "maxLength" in s), default=None)
        known: dict[str, bool] = {}  # type and model repeat across thousands of devices

        def check(value: Any) -> bool:
            if not isinstance(value, str):
                return not strict
            verdict = known.get(value)
            if verdict is None:
                verdict = low <= len(value) and (high is None or len(value) <= high)
                for search in searches:
                    verdict = verdict and search(value) is not None
                if len(known) < 1024:
                    known[value] = verdict
            return verdict

        return check

    @staticmethod
    def _number(schema: dict[str, Any]) -> Predicate:
        low, high = schema.get("minimum"), schema.get("maximum")
        above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        is_number = TYPES["number"]

        def check(value: Any) -> bool:
            return not is_number(value) or not (
                (low is not None and value < low)
                or (high is not None and value > high)
                or (above is not None and value <= above)
                or (below is not None and value >= below)
            )

        return check

    def _object(self, schema: dict[str, Any]) -> Predicate:
        properties = {k: self.compile(v) for k, v in schema.get("properties", {}).items()}
        additional = schema.get("additionalProperties", True)
        others = additional if isinstance(additional, bool) else self.compile(additional)
        names = self.compile(schema["propertyNames"]) if "propertyNames" in schema else None
        required = frozenset(schema.get("required", ()))
        fewest = schema.get("minProperties", 0)

        allowed = frozenset(properties)
        closed = others is False and names is None

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            if len(value) < fewest:
                return False
            if closed:  # the usual shape: known keys only, each with its rule
                if not value.keys() <= allowed:
                    return False
                for key, item in value.items():
                    if not properties[key](item):
                        return False
                return value.keys() >= required
            for key, item in value.items():
                rule = properties.get(key) if isinstance(key, str) else None
                if rule is None:
                    if others is False or (others is not True and not others(item)):
                        return False
                elif not rule(item):
                    return False
                if names is not None and not names(key):
                    return False
            return value.keys() >= required

        return check

    def _array(self, schema: dict[str, Any]) -> Predicate:
        item = self.compile(schema.get("items", True))
        low, high = schema.get("minItems", 0), schema.get("maxItems")

        def check(value: Any) -> bool:
            if not isinstance(value, list):
                return True
            if len(value) < low or (high is not None and len(value) > high):
                return False
            return all(map(item, value))

        return check

    def _ref(self, ref: str) -> Predicate:
        if not ref.startswith("#/"):
            raise UnsupportedSchemaError(f"only local references are supported, not {ref!r}")
        compiled = self._refs.get(ref)
        if compiled is not None:
            return compiled

        def late(value: Any) -> bool:  # for a schema that refers to itself, while compiling
            return self._refs[ref](value)

        self._refs[ref] = late
        target: Any = self._root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        self._refs[ref] = compiled = self.compile(target)
        return compiled


def compile_schema(
    schema: Mapping[str, Any],
    extra: Mapping[str, KeywordCompiler] | None = None,
    *,
    ref: str | None = None,
) -> Predicate:
    """A predicate equal to "`schema` accepts the value" (draft 2020-12, supported keywords).

    `extra` adds keywords of our own: name -> a function from the keyword's value to a
    predicate on the instance. `ref` (e.g. ``#/$defs/domain``): check against that part.
    """
    compiler = Compiler(schema, extra or {})
    return compiler.compile({"$ref": ref} if ref is not None else dict(schema))
