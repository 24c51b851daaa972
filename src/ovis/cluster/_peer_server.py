"""PeerServer: a StorageService reachable by the other nodes over TCP.

Each connection is an asyncio BufferedProtocol around a RequestDecoder
(_wire.py).  Requests are served concurrently and replied to as they finish,
in any order: each starts eagerly and becomes a Task only if it has to wait
(ovis.nbd._eager), as most reads from the page cache do not.

Memory stays bounded per connection: reading from the socket pauses while
MAX_IN_FLIGHT requests, or requests moving MAX_BYTES_IN_FLIGHT bytes, are
being served, or while the peer is not reading our replies (the transport's
pause_writing).  So a connection holds at most that, plus one frame being
received (up to MAX_OBJECT_SIZE).  A malformed frame closes that connection and
no other.  Only asyncio APIs uvloop also implements are used.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from ovis._net import set_nodelay
from ovis.block._device import BlockError, Buffer
from ovis.nbd._constants import Errno
from ovis.nbd._eager import start_eagerly

from ._peer_client import write_buffers
from ._service import StorageService
from ._wire import (
    MAX_LIST_BYTES,
    Flag,
    Op,
    PeerProtocolError,
    Reply,
    Request,
    encode_reply,
    pack_crcs,
    pack_versions,
    unpack_oids,
)
from ._wire_decode import NEED_DATA, RequestDecoder
from ._wire_errors import error_reply

log = logging.getLogger("ovis.cluster")
MAX_IN_FLIGHT = 64
MAX_BYTES_IN_FLIGHT = 256 * 1024 * 1024  # payloads received plus lengths being read
FLUSH_AT = 256 * 1024  # reply bytes coalesced before they must go to the transport
SHUTDOWN_GRACE = 2.0  # seconds aclose() lets running requests finish before cancelling them


class PeerServer:
    """Serves one StorageService to peers; `listen` once, `aclose` when done."""

    def __init__(self, service: StorageService) -> None:
        self.service = service
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_PeerConnection] = set()
        self._closed = False

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Start accepting on host:port (port 0: any free port); return the address bound.

        Raises OSError if the address cannot be bound, RuntimeError if the
        server is already listening or closed.
        """
        if self._server is not None or self._closed:
            raise RuntimeError("PeerServer.listen() may be called once, before aclose()")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _PeerConnection(self), host, port, reuse_address=True
        )
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def aclose(self) -> None:
        """Stop listening, close every connection, wait for its requests; idempotent.

        Requests still running after SHUTDOWN_GRACE seconds are cancelled.
        """
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close("server closing")
        tasks = [task for conn in connections for task in conn.tasks]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class _PeerConnection(asyncio.BufferedProtocol):
    """One peer's connection: decode requests, serve them, write replies."""

    def __init__(self, server: PeerServer) -> None:
        self.server = server
        self.service = server.service
        self.decoder = RequestDecoder()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.peer = "?"
        self.busy = 0
        self.bytes_in_flight = 0
        self.reading = True
        self.write_paused = False
        self.closing = False
        self._pumping = False
        self._out: list[Buffer] = []  # replies waiting for _flush_out
        self._out_bytes = 0
        self._flush_scheduled = False

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        if self.server._closed:
            self.close("server closing")
            return
        self.server._connections.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.decoder.buffer_updated(nbytes)
        self._pump()

    def eof_received(self) -> bool | None:
        return None  # close our side too; running requests' replies are dropped

    def pause_writing(self) -> None:
        self.write_paused = True
        self._set_reading(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server._connections.discard(self)

    # -- serving ------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            log.debug("closing peer connection from %s: %s", self.peer, reason)
            self.transport.abort()

    def _set_reading(self, on: bool) -> None:
        transport = self.transport
        if on != self.reading and transport is not None and not transport.is_closing():
            self.reading = on
            if on:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _pump(self) -> None:
        """Start every buffered request the limits allow; re-entrant calls are no-ops."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self.closing:
                if (
                    self.write_paused
                    or self.busy >= MAX_IN_FLIGHT
                    or self.bytes_in_flight >= MAX_BYTES_IN_FLIGHT
                ):
                    self._set_reading(False)
                    return
                try:
                    event = self.decoder.next_event()
                except PeerProtocolError as exc:
                    log.warning("peer %s sent a bad frame: %s", self.peer, exc)
                    self.close(f"protocol error: {exc}")
                    return
                if event is NEED_DATA:
                    self._set_reading(True)
                    return
                cost = event.length + memoryview(event.payload).nbytes
                self.busy += 1
                self.bytes_in_flight += cost
                task = start_eagerly(self._serve(event, cost))
                if task is not None:
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        finally:
            self._pumping = False

    async def _serve(self, request: Request, cost: int) -> None:
        try:
            try:
                reply = await self._execute(request)
            except Exception as exc:
                if not isinstance(exc, (BlockError, ValueError)):
                    log.exception("peer request %s failed unexpectedly", request.op.name)
                reply = error_reply(request, exc)
            buffers = encode_reply(reply)
            self._out.extend(buffers)
            self._out_bytes += sum(memoryview(b).nbytes for b in buffers)
            # Replies finished in one loop iteration go out together; big
            # ones at once, so that pause_writing() can stop us reading requests.
            if self._out_bytes >= FLUSH_AT:
                self._flush_out()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_out)
        finally:
            self.busy -= 1
            self.bytes_in_flight -= cost
            self._pump()

    def _flush_out(self) -> None:
        self._flush_scheduled = False
        out, self._out, self._out_bytes = self._out, [], 0
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            write_buffers(transport, out)

    async def _execute(self, r: Request) -> Reply:
        s, raw = self.service, bool(r.flags & Flag.RAW)
        fields: tuple[int, int, int] = (0, 0, 0)
        payload: Buffer = b""
        if r.op == Op.READ:
            payload = await s.read(r.epoch, r.oid, r.offset, r.length, raw=raw)
        elif r.op == Op.READ_OBJECT:
            version, payload = await s.read_object(r.epoch, r.oid, raw=raw)
            fields = (version, 0, 0)
        elif r.op == Op.STAT:
            stat = await s.stat(r.epoch, r.oid, raw=raw)
            fields = (stat.version, stat.length, 0)
        elif r.op == Op.CHECKSUMS:
            version, length, crcs = await s.checksums(r.epoch, r.oid)
            fields, payload = (version, length, 0), pack_crcs(crcs)
        elif r.op == Op.WRITE:
            await s.write(r.epoch, r.oid, r.offset, r.payload, r.version, r.token)
        elif r.op == Op.CREATE:
            await s.create(r.epoch, r.oid, r.payload, r.version, r.token)
        elif r.op == Op.REMOVE:
            await s.remove(r.epoch, r.oid, r.token)
        elif r.op == Op.SYNC:
            await s.sync(r.epoch, None if r.flags & Flag.ALL else unpack_oids(r.payload))
        elif r.op == Op.LIST:
            listed = await s.list(r.epoch)
            if 16 * len(listed) > MAX_LIST_BYTES:
                raise BlockError(Errno.EOVERFLOW, f"{len(listed)} objects are too many to list")
            payload = pack_versions(listed)
        elif r.op == Op.FENCE:
            await s.fence(r.epoch, r.oid, r.token)
        return Reply(r.op, r.request_id, fields=fields, payload=payload)
