"""The verbs on objects (get, create, update, patch, delete) with upstream's rules: the
generic registry's (pkg/registry/generic/registry/store.go) and each type's strategy.

Owns identity and system metadata (uid, creationTimestamp, generation, deletion),
preconditions, status-subresource separation, managedFields bookkeeping (via apply.py)
and no-op detection (a write that changes nothing keeps the resourceVersion). Knows
nothing of HTTP: routes.py translates requests into these calls.
"""

from __future__ import annotations

import copy
import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from apiserver_standin import apply as ssa
from apiserver_standin import errors
from apiserver_standin.patch import APPLY, JSON_PATCH, STRATEGIC, json_patch, merge_patch
from apiserver_standin.resources import BY_KIND, ResourceType
from apiserver_standin.store import Event, Key, Store

JSON = dict[str, Any]
_IDENTITY = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(rt: ResourceType, namespace: str, name: str) -> Key:
    return (rt.qualified, namespace if rt.namespaced else "", name)


def _tracked(rt: ResourceType, subresource: str) -> ssa.Tracked:
    """Which paths a write through this endpoint may set (upstream's reset fields)."""
    if subresource == "status":
        if rt.status_writes_metadata:
            return lambda p: p[0] in ("status", "metadata")
        return lambda p: p[0] == "status"
    if rt.status_subresource:
        return lambda p: p[0] != "status"
    return lambda p: True


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, rt: ResourceType, namespace: str, name: str) -> JSON:
        obj = self.store.get(key_of(rt, namespace, name))
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    # -- create --------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, body: Any, *, manager: str) -> JSON:
        obj = self._checked_body(rt, namespace, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice(_NAME_CHARS) for _ in range(5)
            )
        key = key_of(rt, namespace, meta["name"])
        if self.store.get(key) is not None:
            raise errors.already_exists(rt.plural, rt.group, meta["name"])
        writer = ssa.Writer(manager, "", rt.api_version, now(), _tracked(rt, ""))
        obj = ssa.track_update({}, self._prepare_create(rt, obj), writer)
        return copy.deepcopy(self.store.write(key, obj).obj)

    def _checked_body(self, rt: ResourceType, namespace: str, body: Any) -> JSON:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        for field, want in (("kind", rt.kind), ("apiVersion", rt.api_version)):
            if obj.get(field) not in (None, "", want):
                raise errors.bad_request(
                    f"the {field} in the data ({obj[field]}) does not match the expected "
                    f"{field} ({want})"
                )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    @staticmethod
    def _prepare_create(rt: ResourceType, obj: JSON) -> JSON:
        meta = obj["metadata"]
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if rt.tracks_generation:
            meta["generation"] = 1
        if rt.create_status is not None:
            obj["status"] = copy.deepcopy(rt.create_status)
        return obj

    # -- update and patch ----------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        manager: str,
        subresource: str = "",
    ) -> JSON:
        new = self._checked_body(rt, namespace, body)
        if new["metadata"].get("name") != name:
            raise errors.bad_request(
                f"the name of the object ({new['metadata'].get('name')}) does not match the "
                f"name on the URL ({name})"
            )
        live = self.get(rt, namespace, name)
        self._precondition(rt, live, new)
        if not new["metadata"].get("managedFields"):
            new["metadata"]["managedFields"] = live["metadata"].get("managedFields", [])
        writer = ssa.Writer(manager, subresource, rt.api_version, now(), _tracked(rt, subresource))
        return self._commit(rt, live, new, writer, applied=False)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        *,
        manager: str,
        subresource: str = "",
        force: bool = False,
    ) -> tuple[int, JSON]:
        """(201 if an apply created the object else 200, the object)."""
        writer = ssa.Writer(manager, subresource, rt.api_version, now(), _tracked(rt, subresource))
        live = self.store.get(key_of(rt, namespace, name))
        if content_type == APPLY:
            config = self._checked_body(rt, namespace, patch)
            if config["metadata"].get("name") not in (None, name):
                raise errors.bad_request(
                    f"the name of the object ({config['metadata']['name']}) "
                    f"does not match the name on the URL ({name})"
                )
            if live is None and not subresource:
                created = ssa.apply({}, config, writer, force=force)
                created["metadata"]["name"] = name
                created = self._prepare_create(rt, self._checked_body(rt, namespace, created))
                event = self.store.write(key_of(rt, namespace, name), created)
                return 201, copy.deepcopy(event.obj)
            if live is None:
                raise errors.not_found(rt.plural, rt.group, name)
            self._precondition(rt, live, config)
            return 200, self._commit(
                rt, live, ssa.apply(live, config, writer, force=force), writer, applied=True
            )
        if live is None:
            raise errors.not_found(rt.plural, rt.group, name)
        if content_type == JSON_PATCH:
            patched = json_patch(live, patch)
        else:
            if not isinstance(patch, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            patched = merge_patch(live, patch, strategic=content_type == STRATEGIC)
        new = self._checked_body(rt, namespace, patched)
        self._precondition(rt, live, new)
        return 200, self._commit(rt, live, new, writer, applied=False)

    @staticmethod
    def _precondition(rt: ResourceType, live: JSON, new: JSON) -> None:
        wanted = new["metadata"].get("resourceVersion")
        if wanted and wanted != live["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, live["metadata"]["name"], errors.STALE)
        uid = new["metadata"].get("uid")
        if uid and uid != live["metadata"]["uid"]:
            raise errors.conflict(
                rt.plural,
                rt.group,
                live["metadata"]["name"],
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{live['metadata']['uid']}",
            )

    def _commit(
        self, rt: ResourceType, live: JSON, new: JSON, writer: ssa.Writer, *, applied: bool
    ) -> JSON:
        new = self._prepare_update(rt, live, new, writer.subresource)
        if not applied:
            new = ssa.track_update(live, new, writer)
        new["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        if not new["metadata"].get("managedFields"):
            new["metadata"].pop("managedFields", None)
        if new == live:
            return live  # nothing changed: no write, no event, same resourceVersion
        key = key_of(rt, live["metadata"].get("namespace", ""), live["metadata"]["name"])
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.store.write(key, new)
            return copy.deepcopy(self.store.write(key, None).obj)
        return copy.deepcopy(self.store.write(key, new).obj)

    @staticmethod
    def _prepare_update(rt: ResourceType, live: JSON, new: JSON, subresource: str) -> JSON:
        """The type's PrepareForUpdate: what this endpoint may not change comes from live."""
        if subresource == "status":
            out = copy.deepcopy(live)
            if "status" in new:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            if rt.status_writes_metadata:
                out["metadata"] = new["metadata"]
            out["metadata"]["managedFields"] = new["metadata"].get("managedFields", [])
        else:
            out = new
            if rt.status_subresource:
                if "status" in live:
                    out["status"] = copy.deepcopy(live["status"])
                else:
                    out.pop("status", None)
        meta = out["metadata"]
        for field in _IDENTITY:
            if field in live["metadata"]:
                meta[field] = live["metadata"][field]
            else:
                meta.pop(field, None)
        if rt.tracks_generation and live.get("spec") != out.get("spec"):
            meta["generation"] = int(live["metadata"].get("generation", 0)) + 1
        return out

    # -- delete --------------------------------------------------------------------

    def delete(self, rt: ResourceType, namespace: str, name: str, options: Any) -> JSON:
        live = self.get(rt, namespace, name)
        pre = (options.get("preconditions") if isinstance(options, dict) else None) or {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(field) and pre[field] != live["metadata"].get(field):
                raise errors.conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: {label} in precondition: {pre[field]}, "
                    f"{label} in object meta: {live['metadata'].get(field)}",
                )
        key = key_of(rt, namespace, name)
        if live["metadata"].get("finalizers"):
            if live["metadata"].get("deletionTimestamp"):
                return live
            pending = copy.deepcopy(live)
            pending["metadata"]["deletionTimestamp"] = now()
            pending["metadata"]["deletionGracePeriodSeconds"] = 0
            return copy.deepcopy(self.store.write(key, pending).obj)
        self.store.write(key, None)
        if rt.returns_deleted_object:
            return live
        details = {
            "name": name,
            **({"group": rt.group} if rt.group else {}),
            "kind": rt.plural,
            "uid": live["metadata"]["uid"],
        }
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    # -- test hooks ----------------------------------------------------------------

    def put(self, obj: JSON) -> Event:
        """Store `obj` as given (status included), filling only identity and revision."""
        try:
            rt = BY_KIND[(obj["apiVersion"], obj["kind"])]
        except KeyError:
            raise ValueError(
                f"the stand-in serves no {obj.get('apiVersion')}/{obj.get('kind')}"
            ) from None
        obj = copy.deepcopy(json.loads(json.dumps(obj)))
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace", "default") if rt.namespaced else ""
        if rt.namespaced:
            meta["namespace"] = namespace
        key = key_of(rt, namespace, meta["name"])
        live = self.store.get(key)
        meta.pop("resourceVersion", None)
        if live is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
            if rt.tracks_generation:
                meta.setdefault("generation", 1)
        else:
            for field in ("uid", "creationTimestamp"):
                meta.setdefault(field, live["metadata"][field])
        return self.store.write(key, obj)
