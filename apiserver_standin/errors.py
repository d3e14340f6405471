"""Kubernetes `Status` failures: one exception type carrying the Status body the real API
server sends, and one constructor per reason (apimachinery's k8s.io/apimachinery/pkg/api/errors).

Owns the wording of error messages; it does not know about HTTP or storage.
"""

from __future__ import annotations

import math
from typing import Any

JSON = dict[str, Any]


class ApiError(Exception):
    """A request failure answered with a Status object and its HTTP code."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JSON | None = None,
        metadata: JSON | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.metadata = metadata or {}
        self.retry_after = retry_after

    def status(self) -> JSON:
        """The Status body, field for field as apimachinery serializes it."""
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": self.metadata,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(resource: str, group: str, name: str, **extra: Any) -> JSON:
    details: JSON = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource  # upstream puts the resource (plural) in "kind"
    details.update(extra)
    return details


def qualified(resource: str, group: str) -> str:
    """`nodes` or `resourceslices.resource.k8s.io`, as messages name a resource."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource, group)} "{name}" not found',
        details=_details(resource, group, name),
    )


def no_such_path() -> ApiError:
    """An URL that names no resource the server serves."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        details=_details(resource, group, name),
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        details=_details(resource, group, name),
    )


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; each cause is (field, cause type, detail) like a field.Error."""
    summary = ", ".join(f"{f}: {detail}" for f, _, detail in causes)
    what = f"{kind}.{group}" if group else kind
    message = f'{what} "{name}" is invalid: {summary}'
    if len(causes) > 1:
        message = f'{what} "{name}" is invalid: [{summary}]'
    return ApiError(
        422,
        "Invalid",
        message,
        details={
            "name": name,
            **({"group": group} if group else {}),
            "kind": kind,
            "causes": [{"reason": t, "message": d, "field": f} for f, t, d in causes],
        },
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str, *, continue_token: str = "") -> ApiError:
    """410 with reason Expired: a resourceVersion or continue token older than history."""
    metadata = {"continue": continue_token} if continue_token else None
    return ApiError(410, "Expired", message, metadata=metadata)


def too_large_resource_version(wanted: int, current: int) -> ApiError:
    """504 for a resourceVersion not reached yet (storage.NewTooLargeResourceVersionError)."""
    return ApiError(
        504,
        "Timeout",
        f"Too large resource version: {wanted}, current: {current}",
        details={
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
        retry_after=1,
    )


def apply_conflict(causes: list[JSON], message: str) -> ApiError:
    return ApiError(409, "Conflict", message, details={"causes": causes})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        details={},
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return (
        ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(accepted)}",
            details={},
        )
        if content_type
        else bad_request("missing content type")
    )


def internal(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        details={"causes": [{"message": message}]},
    )


# Reasons for statuses injected by tests (ApiServer.fail_next), as the real server names them.
_INJECTED: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "the request is invalid (injected)"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden (injected)"),
    404: ("NotFound", "the server could not find the requested resource"),
    409: (
        "Conflict",
        "Operation cannot be fulfilled: the object has been modified; "
        "please apply your changes to the latest version and try again",
    ),
    410: ("Expired", "too old resource version"),
    422: ("Invalid", "the request is invalid (injected)"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected failure"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


def injected(code: int, retry_after: float | None) -> ApiError:
    """The failure a test asked for, with upstream's reason and message for that code."""
    reason, message = _INJECTED.get(code, ("InternalError", f"injected failure {code}"))
    details: JSON | None = None
    if retry_after is not None:
        details = {"retryAfterSeconds": max(1, math.ceil(retry_after))}
    return ApiError(code, reason, message, details=details, retry_after=retry_after)
