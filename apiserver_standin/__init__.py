"""A Kubernetes API server stand-in over real HTTP, for tests and local demos.

Serves nodes (+status), pods (+status), resource.k8s.io/v1 resourceslices, deviceclasses
and resourceclaims (+status), and coordination.k8s.io/v1 leases from memory, with
upstream's semantics for resourceVersions, watches, pagination, Status errors and
server-side apply. `ApiServer` is the entry point; `python -m apiserver_standin` runs one.
"""

from apiserver_standin.server import ApiServer, RequestRecord

__all__ = ["ApiServer", "RequestRecord"]
