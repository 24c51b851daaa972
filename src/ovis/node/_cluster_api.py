"""The node API's cluster routes (only on a node started with --cluster).

```
GET    /v1/cluster                        node id, epoch (members), accepting writes
GET    /v1/recovery                       this node's recovery progress
POST   /v1/recovery/throttle              {"rate": "100M" | bytes | 0}
POST   /v1/volumes/{name}/attach          {"migrate_from": NODE, "seconds"?: 300}
POST   /v1/volumes/{spec}/check           {"repair"?: false}  -> the CheckReport
```

Every management call on a cluster node runs inside
`ReplicatedObjectStore.management()` (its writes pass volume fences), and a
call that would change a volume attached read-write on another node is
refused with 409: only the holder may snapshot, resize, roll back or delete
it while its clients are connected.  `gc` is refused while any volume is
attached on another node (it could take that writer's fresh objects for
leaks).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ovis._units import parse_size
from ovis.cluster._check import ReplicaChecker
from ovis.cluster._gateway import ReplicatedObjectStore
from ovis.volume import VolumeInUse

from ._api import BadRequest, json_body
from ._cluster import ClusterStack
from ._exports import VolumeExports

_CHANGES = re.compile(r"^/v1/volumes/([^/@]+)(?:/(snapshots|rollback|resize))?$")


def cluster_middleware(stack: ClusterStack) -> Middleware:
    """Management writes pass fences; volumes attached elsewhere are refused."""

    @web.middleware
    async def manage(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = _CHANGES.match(request.path)
        changes = match is not None and (
            (request.method == "POST" and match.group(2) is not None)
            or (request.method == "DELETE" and match.group(2) is None)
        )
        if match and changes and stack.leases is not None:
            holder = await stack.leases.holder(match.group(1))
            if holder is not None and holder.node != stack.node_id:
                raise VolumeInUse(
                    f"volume {match.group(1)!r} is attached read-write on node "
                    f"{holder.node}; do this through that node's API, or detach it first"
                )
        if request.path == "/v1/gc" and stack.leases is not None:
            # gc only knows the volumes open here; a writer elsewhere may have copied up
            # objects its inode does not name yet.
            others = [a for a in await stack.leases.list() if a.node != stack.node_id]
            if others:
                names = ", ".join(sorted(f"{a.name} (on {a.node})" for a in others))
                raise VolumeInUse(f"gc needs every volume detached elsewhere; attached: {names}")
        with ReplicatedObjectStore.management():
            return await handler(request)

    return manage


class ClusterRoutes:
    def __init__(self, exports: VolumeExports, stack: ClusterStack) -> None:
        self.exports = exports
        self.stack = stack

    async def cluster(self, request: web.Request) -> web.Response:
        stack = self.stack
        epoch = stack.view.epoch
        return web.json_response(
            {
                "node_id": stack.node_id,
                "peer": stack.peer_address,
                "epoch": epoch.to_json(),
                "accepting_writes": stack.view.accepting_writes(),
            }
        )

    async def recovery(self, request: web.Request) -> web.Response:
        recovery = self.stack.recovery
        return web.json_response(recovery.status() if recovery else {"state": "not joined"})

    async def throttle(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        try:
            rate = parse_size(body.get("rate", 0))
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"rate: {exc}") from None
        if self.stack.recovery is not None:
            self.stack.recovery.max_rate = rate
        return web.json_response({"max_rate": rate})

    async def attach(self, request: web.Request) -> web.Response:
        """Open a migration window so this node may attach a volume held by another."""
        name = request.match_info["spec"]
        body = await json_body(request)
        source = str(body.get("migrate_from", ""))
        seconds = float(body.get("seconds", 300))
        leases = self.stack.leases
        if not source or leases is None:
            raise BadRequest("give migrate_from: the node that holds the volume now")
        holder = await leases.holder(name)
        if holder is None or holder.node != source:
            where = f"node {holder.node}" if holder else "no node"
            raise VolumeInUse(f"volume {name!r} is attached on {where}, not on {source!r}")
        window = await leases.open_migration(name, source, self.stack.node_id, seconds)
        self.stack.attacher.migrations[name] = source
        return web.json_response({"volume": name, "from": source, "to": self.stack.node_id,
                                  "window": _plain(window)})  # fmt: skip

    async def check(self, request: web.Request) -> web.Response:
        spec = request.match_info["spec"]
        body = await json_body(request)
        oids = await self.exports.library.objects(spec)
        stack = self.stack
        checker = ReplicaChecker(
            stack.service, stack.view, stack.pool, stack.data_dir / "divergent"
        )
        report = await checker.check(oids, repair=bool(body.get("repair", False)))
        return web.json_response({**dataclasses.asdict(report), "clean": report.clean})


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def add_cluster_routes(app: web.Application, exports: VolumeExports, stack: ClusterStack) -> None:
    routes = ClusterRoutes(exports, stack)
    app.add_routes(
        [
            web.get("/v1/cluster", routes.cluster),
            web.get("/v1/recovery", routes.recovery),
            web.post("/v1/recovery/throttle", routes.throttle),
            web.post("/v1/volumes/{spec}/attach", routes.attach),
            web.post("/v1/volumes/{spec}/check", routes.check),
        ]
    )
