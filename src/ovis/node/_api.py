"""The node's management API: JSON over HTTP on loopback (aiohttp).

```
GET    /v1/node                          this node: version, data dir, NBD URI template
POST   /v1/node/stop                     stop the node cleanly (as SIGTERM)
GET    /v1/volumes                       {"volumes": [volume, ...]}, snapshots included
POST   /v1/volumes                       {"name", "size", "object_size"?}      -> 201 volume
GET    /v1/volumes/{spec}                volume (spec: name or name@tag)
DELETE /v1/volumes/{spec}                name with all its snapshots, or one name@tag
POST   /v1/volumes/{name}/snapshots      {"tag"?} (default: a UTC timestamp)   -> 201 volume
POST   /v1/volumes/{name@tag}/clone      {"name"}                              -> 201 volume
POST   /v1/volumes/{name}/rollback       {"tag"}
POST   /v1/volumes/{name}/resize         {"size", "force"?}
GET    /v1/tree                          {"tree": [volume + "children": [...], ...]}
GET    /v1/diff?old=SPEC&new=SPEC[&granularity=N]   {"old", "new", "extents"}
POST   /v1/gc                            {"removed", "kept"}
```

Sizes are bytes, or strings such as "10G".  Errors are `{"error": "one
line", "kind": "volume-not-found"}` with 404 (no such volume or route), 409
(exists, in use, or a shrink that would drop data without "force") or 400
(a bad argument); 500 means the store failed underneath.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from ovis._units import format_size, parse_size
from ovis.volume import (
    DataBeyondSize,
    InvalidVolumeArgument,
    NotASnapshot,
    SnapshotReadOnly,
    VolumeError,
    VolumeExists,
    VolumeInfo,
    VolumeInUse,
    VolumeLibrary,
    VolumeNode,
    VolumeNotFound,
)

from ._exports import VolumeExports

if TYPE_CHECKING:
    from ._cluster import ClusterStack

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("ovis.node")
T = TypeVar("T")
CLOSE_GRACE = 0.5  # seconds a volume may take to close after its last client left
_STATUS: tuple[tuple[type[VolumeError], int], ...] = (
    (VolumeNotFound, 404),
    (VolumeExists, 409),
    (VolumeInUse, 409),
    (DataBeyondSize, 409),
    (InvalidVolumeArgument, 400),
    (NotASnapshot, 400),
    (SnapshotReadOnly, 400),
)


class BadRequest(Exception):
    """The request itself is malformed (400)."""


def _kind(exc: BaseException) -> str:
    """VolumeIOError -> "volume-io-error"."""
    words = r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])"
    return re.sub(words, "-", type(exc).__name__).lower()


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": message, "kind": kind}, status=status)


def _refreshing(exports: VolumeExports) -> Middleware:
    """After any change, failed ones too, refresh what NBD clients can look up."""

    @web.middleware
    async def refresh(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.method not in ("GET", "HEAD"):
                try:
                    await exports.refresh()
                except VolumeError as exc:
                    log.warning("cannot refresh the export list: %s", exc)

    return refresh


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except VolumeError as exc:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        return _error(status, str(exc), _kind(exc))
    except BadRequest as exc:
        return _error(400, str(exc), "bad-request")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{request.method} {request.path}: {exc.reason}", "http")
    except Exception as exc:  # a bug: still one line for the user, the details in the log
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error: {exc}", "internal")


def volume_json(info: VolumeInfo, exports: VolumeExports) -> dict[str, Any]:
    data = dataclasses.asdict(info)
    data.update(spec=info.spec, snapshot=info.snapshot, connections=exports.connections(info.spec))
    return data


def _tree_json(node: VolumeNode, exports: VolumeExports) -> dict[str, Any]:
    data = volume_json(node.info, exports)
    data["children"] = [_tree_json(child, exports) for child in node.children]
    return data


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object ({} without a body); BadRequest otherwise."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    return value


def _size(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{key!r} must be a size in bytes or a string such as '10G'")
    try:
        return parse_size(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _open_over_nbd(name: str, action: str) -> VolumeInUse:
    return VolumeInUse(f"volume {name!r} is open over NBD; disconnect its clients to {action}")


async def _once_closed(operation: Callable[[], Awaitable[T]]) -> T:
    """Run an operation that needs the volume closed.

    A client that has just disconnected may still be finishing (the server
    flushes and closes after DISC), so a script that runs `qemu-img` and then
    `ovis vdi rollback` would race it: retry briefly before answering 409.
    """
    deadline = time.monotonic() + CLOSE_GRACE
    while True:
        try:
            return await operation()
        except VolumeInUse:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.02)


class _Routes:
    def __init__(self, exports: VolumeExports, node: dict[str, Any]) -> None:
        self.exports = exports
        self.library: VolumeLibrary = exports.library
        self.about = node

    def _json(self, info: VolumeInfo, status: int = 200) -> web.Response:
        return web.json_response(volume_json(info, self.exports), status=status)

    async def node(self, request: web.Request) -> web.Response:
        node = dict(self.about)
        node["connections"] = sum(self.exports.connections(s) for s in self.exports.volumes)
        return web.json_response(node)

    async def list(self, request: web.Request) -> web.Response:
        infos = await self.library.list()
        return web.json_response({"volumes": [volume_json(i, self.exports) for i in infos]})

    async def create(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        name = _text(body, "name")
        kwargs = {"object_size": _size(body, "object_size")} if "object_size" in body else {}
        return self._json(await self.library.create(name, _size(body, "size"), **kwargs), 201)

    async def info(self, request: web.Request) -> web.Response:
        return self._json(await self.library.info(request.match_info["spec"]))

    async def delete(self, request: web.Request) -> web.Response:
        spec = request.match_info["spec"]
        try:
            await _once_closed(lambda: self.library.delete(spec))
        except VolumeInUse as exc:
            raise VolumeInUse(f"{exc} over NBD; disconnect its clients first") from None
        return web.json_response({"deleted": spec})

    async def snapshot(self, request: web.Request) -> web.Response:
        name = request.match_info["spec"]
        body = await json_body(request)
        if body.get("tag") is not None:
            return self._json(await self.library.snapshot(name, _text(body, "tag")), 201)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for attempt in range(100):  # several snapshots within one second
            try:
                info = await self.library.snapshot(name, f"{stamp}-{attempt}" if attempt else stamp)
            except VolumeExists:
                continue
            return self._json(info, 201)
        raise VolumeExists(f"too many snapshots of {name!r} at {stamp}")

    async def clone(self, request: web.Request) -> web.Response:
        name = _text(await json_body(request), "name")
        return self._json(await self.library.clone(request.match_info["spec"], name), 201)

    async def rollback(self, request: web.Request) -> web.Response:
        name = request.match_info["spec"]
        tag = _text(await json_body(request), "tag")
        try:
            info = await _once_closed(lambda: self.library.rollback(name, tag))
        except VolumeInUse:
            raise _open_over_nbd(name, "roll it back") from None
        return self._json(info)

    async def resize(self, request: web.Request) -> web.Response:
        name = request.match_info["spec"]
        body = await json_body(request)
        size, force = _size(body, "size"), body.get("force", False)
        if not isinstance(force, bool):
            raise BadRequest("'force' must be true or false")
        try:
            info = await _once_closed(lambda: self.library.resize(name, size, force=force))
        except VolumeInUse:
            raise _open_over_nbd(name, "shrink it") from None
        except DataBeyondSize:
            raise DataBeyondSize(
                f"volume {name!r} holds data past {format_size(size)}; shrinking would drop it"
            ) from None
        return self._json(info)

    async def tree(self, request: web.Request) -> web.Response:
        roots = await self.library.tree()
        return web.json_response({"tree": [_tree_json(root, self.exports) for root in roots]})

    async def diff(self, request: web.Request) -> web.Response:
        query = request.query
        if "old" not in query or "new" not in query:
            raise BadRequest("diff needs ?old=SPEC&new=SPEC")
        granularity = _size(query, "granularity") if "granularity" in query else None
        extents = await self.library.diff(query["old"], query["new"], granularity=granularity)
        old = await self.library.info(query["old"])
        new = await self.library.info(query["new"])
        return web.json_response(
            {
                "old": volume_json(old, self.exports),
                "new": volume_json(new, self.exports),
                "extents": [dataclasses.asdict(e) for e in extents],
            }
        )

    async def gc(self, request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(await self.library.gc()))


def make_api(
    exports: VolumeExports,
    node: dict[str, Any],
    cluster: ClusterStack | None = None,
    on_stop: Callable[[], None] | None = None,
) -> web.Application:
    """The aiohttp application; `node` is what GET /v1/node reports.

    `on_stop` is called by POST /v1/node/stop (`ovis node kill`): a clean stop.
    With `cluster` (a node started with --cluster) the cluster routes are added
    (see _cluster_api.py) and management calls run under its middleware.
    """
    middlewares = [_refreshing(exports), _errors]
    if cluster is not None:
        from ._cluster_api import add_cluster_routes, cluster_middleware

        middlewares.append(cluster_middleware(cluster))
    app = web.Application(middlewares=middlewares)
    node.update(version=metadata.version("ovis"), pid=os.getpid())
    routes = _Routes(exports, node)  # keeps `node`: the caller adds the API address later
    app.add_routes(
        [
            web.get("/v1/node", routes.node),
            web.get("/v1/volumes", routes.list),
            web.post("/v1/volumes", routes.create),
            web.get("/v1/volumes/{spec}", routes.info),
            web.delete("/v1/volumes/{spec}", routes.delete),
            web.post("/v1/volumes/{spec}/snapshots", routes.snapshot),
            web.post("/v1/volumes/{spec}/clone", routes.clone),
            web.post("/v1/volumes/{spec}/rollback", routes.rollback),
            web.post("/v1/volumes/{spec}/resize", routes.resize),
            web.get("/v1/tree", routes.tree),
            web.get("/v1/diff", routes.diff),
            web.post("/v1/gc", routes.gc),
        ]
    )
    if on_stop is not None:

        async def stop(request: web.Request) -> web.Response:
            assert on_stop is not None
            asyncio.get_running_loop().call_later(0.1, on_stop)  # after this reply is sent
            return web.json_response({"stopping": True})

        app.add_routes([web.post("/v1/node/stop", stop)])
    if cluster is not None:
        add_cluster_routes(app, exports, cluster)
    return app
