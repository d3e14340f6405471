"""Patch formats other than apply: JSON merge patch (RFC 7386), strategic merge patch and
JSON patch (RFC 6902). Pure functions on JSON values; errors are ApiErrors as upstream sends.

Strategic merge patch is treated as a merge patch: maps merge key by key and `null` deletes,
but lists are replaced whole (upstream merges lists with a patchMergeKey, e.g. containers by
name, item by item) and `$patch`/`$retainKeys`/`$setElementOrder`/`$deleteFromPrimitiveList`
directives are dropped instead of obeyed.
"""

from __future__ import annotations

import copy
from typing import Any

from apiserver_standin.errors import ApiError, bad_request

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
ACCEPTED = [JSON_PATCH, MERGE, APPLY, STRATEGIC]


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], op: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, op)
    return node, tokens[-1]


def _child(node: Any, token: str, op: str) -> Any:
    try:
        if isinstance(node, list):
            return node[int(token)]
        return node[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise _failed(op, token) from None


def _failed(op: str, token: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f"the server rejected our request due to an error in our "
        f"request: {op} operation does not apply: doc is missing path: {token}",
    )


def _get(doc: Any, path: str, op: str) -> Any:
    node = doc
    for token in _pointer(path):
        node = _child(node, token, op)
    return node


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _parent(doc, tokens, op)
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if not 0 <= index <= len(parent):
            raise _failed(op, path)
        parent.insert(index, copy.deepcopy(value))
    elif isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    else:
        raise _failed(op, path)
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> Any:
    tokens = _pointer(path)
    parent, last = _parent(doc, tokens, op)
    _child(parent, last, op)
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid json patch operation: {operation!r}")
        op, path = operation["op"], operation["path"]
        match op:
            case "add":
                doc = _add(doc, path, operation.get("value"))
            case "remove":
                doc = _remove(doc, path)
            case "replace":
                _get(doc, path, op)
                doc = _add(_remove(doc, path, op), path, operation.get("value"), op)
            case "move" | "copy":
                value = copy.deepcopy(_get(doc, operation.get("from", ""), op))
                if op == "move":
                    doc = _remove(doc, operation.get("from", ""), op)
                doc = _add(doc, path, value, op)
            case "test":
                if _get(doc, path, op) != operation.get("value"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an "
                        f"error in our request: testing value {path} failed",
                    )
            case _:
                raise bad_request(f"Unexpected kind: {op}")
    return doc
