"""The REST surface: URL paths and verbs to registry and listing calls, JSON in and out,
Status bodies for failures, bearer-token authentication, discovery, /version and health.

Paths: /api/v1/{plural}[/{name}[/status]], /api/v1/namespaces/{ns}/{plural}[/{name}[/status]]
and the same under /apis/{group}/{version}. Namespaces are not objects here: every
namespace exists.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from apiserver_standin import errors
from apiserver_standin.http_server import Request, Response, Stream
from apiserver_standin.listing import Query, list_objects, watch_stream
from apiserver_standin.patch import ACCEPTED, APPLY, JSON_PATCH
from apiserver_standin.registry import Registry
from apiserver_standin.resources import BY_PATH, RESOURCES, ResourceType

logger = logging.getLogger(__name__)
JSON = dict[str, Any]
JSON_TYPE = "application/json"  # lightkube turns an error into ApiError only for exactly this

VERSION: JSON = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-04-22T00:00:00Z",
    "goVersion": "go1.26.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PUBLIC = {"/version", "/healthz", "/readyz", "/livez"}
"""Paths anonymous requests may read (system:public-info-viewer); a wrong token still 401s."""


def json_response(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    return Response(
        status,
        data,
        [("Content-Type", JSON_TYPE), ("Cache-Control", "no-cache, private"), *(headers or [])],
    )


def error_response(error: errors.ApiError) -> Response:
    headers = []
    if error.retry_after is not None:
        value = error.retry_after
        headers.append(("Retry-After", str(int(value)) if value == int(value) else str(value)))
    return json_response(error.code, error.status(), headers)


class Api:
    def __init__(self, registry: Registry, *, token: str | None, bookmark_interval: float) -> None:
        self.registry = registry
        self.token = token
        self.bookmark_interval = bookmark_interval

    def authenticate(self, request: Request) -> None:
        """401 for a wrong token, and for no token on anything but the public paths."""
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        if given:
            scheme, _, value = given.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), self.token):
                return
            raise errors.unauthorized()
        if request.path not in _PUBLIC:
            raise errors.unauthorized()

    async def handle(self, request: Request) -> Response | Stream:
        try:
            self.authenticate(request)
            _refuse_dry_run(request)
            return await self._route(request)
        except errors.ApiError as error:
            return error_response(error)
        except Exception as error:  # a bug: answer like the real server, log it once
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(errors.internal(str(error)))

    async def _route(self, request: Request) -> Response | Stream:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/readyz", "/livez"):
            return Response(200, b"ok", [("Content-Type", "text/plain; charset=utf-8")])
        if path == "/version":
            return json_response(200, VERSION)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts in (["api"], ["apis"]):
            return json_response(200, _discovery_root(parts[0]))
        else:
            raise errors.no_such_path()
        if not rest:
            return json_response(200, _resource_list(group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        rt = BY_PATH.get((group, version, rest[0]))
        if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
            raise errors.no_such_path()
        if len(rest) == 1:
            return await self._collection(request, rt, namespace)
        if len(rest) == 3 and (rest[2] != "status" or not rt.status_subresource):
            raise errors.no_such_path()
        if rt.namespaced and namespace is None:
            raise errors.no_such_path()
        return self._item(request, rt, namespace or "", rest[1], rest[2] if len(rest) == 3 else "")

    async def _collection(
        self, request: Request, rt: ResourceType, namespace: str | None
    ) -> Response | Stream:
        if request.method == "GET":
            query = Query.parse(rt, namespace, request.query)
            if request.query.get("watch", "") in ("1", "t", "T", "true", "TRUE", "True"):
                lines = watch_stream(
                    self.registry.store, query, bookmark_interval=self.bookmark_interval
                )
                return Stream(
                    200,
                    lines,
                    [("Content-Type", JSON_TYPE), ("Cache-Control", "no-cache, private")],
                )
            return json_response(200, await list_objects(self.registry.store, query))
        if request.method == "POST" and (namespace is not None or not rt.namespaced):
            created = self.registry.create(
                rt, namespace or "", _body(request), manager=_manager(request)
            )
            return json_response(201, created)
        if request.method == "DELETE" and (namespace is not None or not rt.namespaced):
            return json_response(200, await self._delete_collection(request, rt, namespace))
        raise errors.method_not_allowed()

    async def _delete_collection(
        self, request: Request, rt: ResourceType, namespace: str | None
    ) -> JSON:
        listed = await list_objects(self.registry.store, Query.parse(rt, namespace, request.query))
        options = _body(request) if request.body else {}
        deleted = [
            self.registry.delete(
                rt, item["metadata"].get("namespace", ""), item["metadata"]["name"], options
            )
            for item in listed["items"]
        ]
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.registry.store.rv)},
            "items": [d for d in deleted if d.get("kind") != "Status"],
        }

    def _item(
        self, request: Request, rt: ResourceType, namespace: str, name: str, subresource: str
    ) -> Response:
        match request.method:
            case "GET":
                return json_response(200, self.registry.get(rt, namespace, name))
            case "PUT":
                updated = self.registry.update(
                    rt,
                    namespace,
                    name,
                    _body(request),
                    manager=_manager(request),
                    subresource=subresource,
                )
                return json_response(200, updated)
            case "PATCH":
                return self._patch(request, rt, namespace, name, subresource)
            case "DELETE" if not subresource:
                options = _body(request) if request.body else {}
                return json_response(200, self.registry.delete(rt, namespace, name, options))
        raise errors.method_not_allowed()

    def _patch(
        self, request: Request, rt: ResourceType, namespace: str, name: str, subresource: str
    ) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ACCEPTED:
            raise errors.unsupported_media_type(content_type, ACCEPTED)
        force_given = "force" in request.query
        if content_type != APPLY and force_given:
            raise errors.invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [
                    (
                        "force",
                        "FieldValueForbidden",
                        "Forbidden: may not be specified for non-apply patch",
                    )
                ],
            )
        if content_type == APPLY and not request.query.get("fieldManager"):
            raise errors.invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [
                    (
                        "fieldManager",
                        "FieldValueRequired",
                        "Required value: is required for apply patch",
                    )
                ],
            )
        body = _body(request)
        if content_type == JSON_PATCH and not isinstance(body, list):
            raise errors.bad_request("a JSON patch must be a list of operations")
        status, obj = self.registry.patch(
            rt,
            namespace,
            name,
            content_type,
            body,
            manager=_manager(request),
            subresource=subresource,
            force=request.query.get("force", "") in ("1", "true", "True"),
        )
        return json_response(status, obj)


def _refuse_dry_run(request: Request) -> None:
    # Refused rather than ignored: ignoring it would persist a mere trial.
    if request.query.get("dryRun"):
        raise errors.bad_request("dryRun is not supported by the API server stand-in")


def _body(request: Request) -> Any:
    try:
        return json.loads(request.body or b"null")
    except ValueError as error:
        raise errors.bad_request(f"the request body is not valid JSON: {error}") from None


def _manager(request: Request) -> str:
    """The fieldManager, else the user agent up to its first "/" (prefixFromUserAgent)."""
    manager = request.query.get("fieldManager", "")
    if not manager:
        manager = request.headers.get("user-agent", "").split("/")[0][:128] or "unknown"
    return manager


def _discovery_root(which: str) -> JSON:
    if which == "api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    groups: dict[str, list[str]] = {}
    for rt in RESOURCES:
        if rt.group and rt.version not in groups.setdefault(rt.group, []):
            groups[rt.group].append(rt.version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
            }
            for g, vs in groups.items()
        ],
    }


def _resource_list(group: str, version: str) -> JSON:
    served = [rt for rt in RESOURCES if (rt.group, rt.version) == (group, version)]
    if not served:
        raise errors.no_such_path()
    verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    resources: list[JSON] = []
    for rt in served:
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            }
        )
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
