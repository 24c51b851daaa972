"""EtcdCoordinator: the Coordinator over an etcd v3 cluster, via its JSON gateway.

Sessions are etcd leases, CAS is a txn comparing mod_revision, and watches are
gateway streams that reopen on another member from the last revision seen + 1,
so a member's death costs neither events nor duplicates.  See `_gateway` for
the failover and error rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Literal

from ._gateway import Gateway, Json, _MemberError, b64, prefix_end, unb64
from ._interface import (
    Compacted,
    CompareFailed,
    Coordinator,
    CoordinatorError,
    KeyValue,
    Session,
    SessionLost,
    Unavailable,
    WatchEvent,
)

_RECONNECT_PAUSE = 0.05


def _kv(raw: Json) -> KeyValue:
    return KeyValue(
        key=unb64(raw.get("key")).decode(),
        value=unb64(raw.get("value")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        session=int(raw.get("lease", 0)),
    )


def _revision(reply: Json) -> int:
    return int(reply["header"]["revision"])


class EtcdCoordinator(Coordinator):
    """A Coordinator over the etcd members at `endpoints` ("http://127.0.0.1:2379", ...).

    `timeout` bounds how long a call (or a watch reconnect) keeps trying the
    members before raising Unavailable; `request_timeout` bounds one attempt.
    `api_prefix` forces the gateway path ("/v3" for etcd >= 3.4, "/v3beta" for
    3.3); by default "/v3" is tried first and "/v3beta" on a 404.
    """

    def __init__(
        self,
        endpoints: list[str] | str,
        *,
        timeout: float = 5.0,
        request_timeout: float = 2.0,
        api_prefix: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        self._gw = Gateway(
            endpoints, timeout=timeout, request_timeout=request_timeout, api_prefix=api_prefix
        )
        self._sessions: dict[int, Session] = {}
        self._closed = False

    @property
    def endpoint(self) -> str:
        """The member this client talks to first (it changes on failover)."""
        return self._gw.current

    # -- sessions ------------------------------------------------------------

    async def _grant(self, ttl: int) -> int:
        # A grant whose reply is lost leaks a lease nobody renews: it expires alone.
        reply = await self._gw.call("/lease/grant", {"TTL": str(ttl)}, idempotent=True)
        return int(reply["ID"])

    async def _renew(self, session_id: int, ttl: int) -> bool:
        try:
            reply = await self._gw.call(
                "/lease/keepalive", {"ID": str(session_id)}, idempotent=True
            )
        except SessionLost:
            return False
        return int(reply.get("result", reply).get("TTL", 0)) > 0

    async def close_session(self, session: Session, *, revoke: bool = True) -> None:
        session._stop_keepalive()
        self._sessions.pop(session.id, None)
        if revoke:
            with contextlib.suppress(SessionLost):
                await self._gw.call("/lease/revoke", {"ID": str(session.id)}, idempotent=True)
            session.lost.set()

    # -- keys ----------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        reply = await self._gw.call("/kv/range", {"key": b64(key)}, idempotent=True)
        kvs = reply.get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        raw = prefix.encode()
        body = {"key": b64(raw), "range_end": b64(prefix_end(raw))}
        reply = await self._gw.call("/kv/range", body, idempotent=True)
        return [_kv(kv) for kv in reply.get("kvs", [])], _revision(reply)

    @staticmethod
    def _put_request(key: str, value: bytes, session: Session | None) -> Json:
        request: Json = {"key": b64(key), "value": b64(value)}
        if session is not None:
            request["lease"] = str(session.id)
        return request

    async def put(self, key: str, value: bytes, *, session: Session | None = None) -> int:
        body = self._put_request(key, value, session)
        return _revision(await self._gw.call("/kv/put", body, idempotent=False))

    async def _txn_if(self, key: str, expected: int, operation: Json) -> int:
        body = {
            "compare": [
                {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(expected)}
            ],
            "success": [operation],
            "failure": [{"request_range": {"key": b64(key)}}],
        }
        reply = await self._gw.call("/kv/txn", body, idempotent=False)
        if reply.get("succeeded"):
            return _revision(reply)
        kvs = reply["responses"][0].get("response_range", {}).get("kvs", [])
        raise CompareFailed(key, expected, _kv(kvs[0]).mod_revision if kvs else 0)

    async def put_if(
        self, key: str, value: bytes, expected_revision: int, *, session: Session | None = None
    ) -> int:
        request = self._put_request(key, value, session)
        return await self._txn_if(key, expected_revision, {"request_put": request})

    async def delete_if(self, key: str, expected_revision: int) -> int:
        if expected_revision <= 0:
            raise ValueError("delete_if needs the revision of an existing key (> 0)")
        operation = {"request_delete_range": {"key": b64(key)}}
        return await self._txn_if(key, expected_revision, operation)

    async def compact(self, revision: int) -> None:
        try:
            await self._gw.call("/kv/compaction", {"revision": str(revision)}, idempotent=True)
        except CoordinatorError as exc:
            if "compacted" not in str(exc):  # already compacted past it: nothing to do
                raise

    # -- watches -------------------------------------------------------------

    async def watch(self, prefix: str, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        raw = prefix.encode()
        next_rev = max(from_revision, 1)
        broken_since: float | None = None
        while True:
            request = {
                "key": b64(raw),
                "range_end": b64(prefix_end(raw)),
                "start_revision": str(next_rev),
            }
            stream = self._gw.stream("/watch", {"create_request": request})
            try:
                async for result in stream:
                    if result.get("canceled"):
                        compact = int(result.get("compact_revision", 0))
                        if compact:
                            raise Compacted(next_rev, compact)
                        reason = result.get("cancel_reason", "watch canceled")
                        raise _MemberError(str(reason), applied_maybe=False)
                    if result.get("created"):
                        broken_since = None
                    # A revision's events arrive in one message, so resuming from
                    # the last revision + 1 neither skips nor repeats anything.
                    for event in result.get("events", []):
                        kv = _kv(event["kv"])
                        deleted = event.get("type") == "DELETE"
                        kind: Literal["put", "delete"] = "delete" if deleted else "put"
                        yield WatchEvent(kind, kv.key, kv.value, kv.mod_revision)
                        next_rev = kv.mod_revision + 1
            except _MemberError as exc:
                now = time.monotonic()
                broken_since = broken_since or now
                if now - broken_since > self._gw.timeout:
                    raise Unavailable(
                        f"etcd watch on {prefix!r} could not be kept open for "
                        f"{self._gw.timeout:g}s (quorum lost?): {exc}"
                    ) from exc
                await asyncio.sleep(_RECONNECT_PAUSE)
            finally:
                await stream.aclose()

    # -- lifetime ------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        sessions = list(self._sessions.values())
        for session in sessions:
            session._stop_keepalive()
        for session in sessions:
            with contextlib.suppress(CoordinatorError, TimeoutError):
                await asyncio.wait_for(self.close_session(session), 1.0)
        await self._gw.aclose()
