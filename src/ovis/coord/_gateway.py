"""A minimal client of etcd's v3 JSON gateway, with failover across members.

The gateway is gRPC mapped onto HTTP/JSON: int64s are strings, bytes are
base64, and fields at their default (false, 0, empty, PUT) are omitted.
Requests carry `Grpc-Metadata-hasleader: true`, so a member without a leader
answers "no leader" at once instead of stalling for seconds.

Failover rule: a request that never reached a member (connection refused,
"no leader") moves on to the next endpoint until `timeout` runs out, then
raises Unavailable naming every member's last error.  A request that may
have been applied (reply lost, member died mid-call) is retried only if it
is idempotent; otherwise it raises OutcomeUnknown.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from ._interface import (
    CoordinatorClosed,
    CoordinatorError,
    OutcomeUnknown,
    SessionLost,
    Unavailable,
)

Json = dict[str, Any]
_RETRY_PAUSE = 0.05
# gRPC codes that mean the member refused before doing anything.
_NOT_APPLIED = ("no leader", "not capable", "too many requests")


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # the whole keyspace
    return stripped[:-1] + bytes([stripped[-1] + 1])


class _MemberError(Exception):
    def __init__(self, message: str, *, applied_maybe: bool) -> None:
        super().__init__(message)
        self.applied_maybe = applied_maybe


class Gateway:
    """POSTs JSON to one of `endpoints` (http://host:port), failing over between them."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        timeout: float = 5.0,
        request_timeout: float = 2.0,
        api_prefix: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdCoordinator needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._fixed_prefix = api_prefix is not None
        self._prefix = api_prefix or "/v3"
        self._current = 0
        self._http: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def current(self) -> str:
        """The endpoint requests go to first."""
        return self.endpoints[self._current]

    def _session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise CoordinatorClosed("EtcdCoordinator is closed")
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers={"Grpc-Metadata-hasleader": "true"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout),
            )
        return self._http

    async def aclose(self) -> None:
        self._closed = True
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _fail_over(self, endpoint: str) -> None:
        if self.current == endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    async def call(self, path: str, body: Json, *, idempotent: bool) -> Json:
        """One unary call (path like "/kv/range"); returns the decoded reply."""
        deadline = time.monotonic() + self.timeout
        errors: dict[str, str] = {}
        while True:
            endpoint = self.current
            try:
                return await self._post(endpoint, path, body, deadline)
            except _MemberError as exc:
                errors[endpoint] = str(exc)
                if exc.applied_maybe and not idempotent:
                    raise OutcomeUnknown(f"etcd {endpoint}{path}: {exc}; outcome unknown") from exc
            self._fail_over(endpoint)
            if time.monotonic() >= deadline:
                raise Unavailable(self._explain(path, errors))
            if self.current == self.endpoints[0] or len(self.endpoints) == 1:
                await asyncio.sleep(_RETRY_PAUSE)

    def _explain(self, what: str, errors: dict[str, str]) -> str:
        detail = "; ".join(f"{ep}: {err}" for ep, err in errors.items())
        return (
            f"no etcd member could serve {what} within {self.timeout:g}s (quorum lost?): {detail}"
        )

    async def _post(self, endpoint: str, path: str, body: Json, deadline: float) -> Json:
        budget = max(0.05, min(self.request_timeout, deadline - time.monotonic()))
        try:
            async with self._session().post(
                f"{endpoint}{self._prefix}{path}",
                json=body,
                timeout=aiohttp.ClientTimeout(total=budget),
            ) as resp:
                if resp.status == 404 and not self._fixed_prefix and self._prefix == "/v3":
                    self._prefix = "/v3beta"  # etcd 3.3 serves the gateway under v3beta
                    raise _MemberError("no /v3 gateway; trying /v3beta", applied_maybe=False)
                reply = await resp.json(content_type=None)
        except aiohttp.ClientConnectorError as exc:
            raise _MemberError(f"cannot connect: {exc.os_error}", applied_maybe=False) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _MemberError(f"{type(exc).__name__}: {exc}", applied_maybe=True) from exc
        return check_reply(reply, applied_maybe=True)

    async def stream(self, path: str, body: Json) -> AsyncGenerator[Json, None]:
        """Open a server stream (watch) on some member; yield each message's result.

        Connecting fails over like `call`.  Once open, a broken stream raises
        _MemberError; the caller reopens it from where it was.
        """
        deadline = time.monotonic() + self.timeout
        errors: dict[str, str] = {}
        while True:
            endpoint = self.current
            try:
                resp = await self._open(endpoint, path, body)
                break
            except _MemberError as exc:
                errors[endpoint] = str(exc)
            self._fail_over(endpoint)
            if time.monotonic() >= deadline:
                raise Unavailable(self._explain(path, errors))
            await asyncio.sleep(_RETRY_PAUSE)
        try:
            while True:
                try:
                    line = await resp.content.readline()
                    if not line:
                        raise _MemberError(f"{endpoint} closed the stream", applied_maybe=False)
                    message = json.loads(line)
                    if "error" in message:
                        error = message["error"]
                        raise _MemberError(str(error.get("message", error)), applied_maybe=False)
                except (aiohttp.ClientError, ValueError) as exc:
                    self._fail_over(endpoint)
                    raise _MemberError(f"stream broke: {exc}", applied_maybe=False) from exc
                except _MemberError:
                    self._fail_over(endpoint)
                    raise
                yield message.get("result", message)
        finally:
            resp.close()

    async def _open(self, endpoint: str, path: str, body: Json) -> aiohttp.ClientResponse:
        try:
            resp = await self._session().post(
                f"{endpoint}{self._prefix}{path}",
                json=body,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout),
            )
        except aiohttp.ClientError as exc:
            raise _MemberError(f"{type(exc).__name__}: {exc}", applied_maybe=False) from exc
        if resp.status == 200:
            return resp
        text = (await resp.text())[:200]
        resp.close()
        if resp.status == 404 and not self._fixed_prefix and self._prefix == "/v3":
            self._prefix = "/v3beta"  # etcd 3.3 serves the gateway under v3beta
        raise _MemberError(f"HTTP {resp.status}: {text}", applied_maybe=False)


def check_reply(reply: Json, *, applied_maybe: bool) -> Json:
    """Turn a gateway error body into the matching exception."""
    if "error" not in reply and "code" not in reply:
        return reply
    message = str(reply.get("message") or reply.get("error"))
    if any(text in message for text in _NOT_APPLIED):
        raise _MemberError(message, applied_maybe=False)
    if "lease not found" in message:
        raise SessionLost(f"etcd: {message}")
    if "request timed out" in message or "leader changed" in message:
        raise _MemberError(message, applied_maybe=applied_maybe)
    raise CoordinatorError(f"etcd: {message} (code {reply.get('code')})")
