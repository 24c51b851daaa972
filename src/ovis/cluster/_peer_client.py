"""PeerPool: calls to other nodes' StorageServices over the peer protocol.

One persistent connection per peer address, opened on first use and again
after it dies; requests on it are pipelined, each waiting on a future keyed
by its request id (no Task per request), and the replies may come in any
order.  Requests made in one event-loop iteration go to the transport
together, and a big payload is written from the caller's buffer, not copied
into a joined message (`write_buffers`).

Failure model: a peer that refuses, resets, closes, sends bytes that are not
a valid reply, or leaves a request unanswered for `timeout` seconds is
*unavailable*: the connection is closed, every request in flight on it fails
at once with `PeerUnavailable(addr, why)`, and the next call reconnects.
Errors the remote service raised arrive as their own types with the same
fields (ObjectNotFound, StaleVersion, WrongEpoch, Fenced, ...; see _wire).
A request abandoned by its caller (cancelled) may still be applied by the
peer; versions make a retry of it harmless.  A caller must not change a
payload buffer before its call returns.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection
from typing import cast

from ovis._net import set_nodelay
from ovis.block._device import Buffer
from ovis.store import ObjectStat

from ._model import PeerUnavailable
from ._wire import (
    DIRECT_PAYLOAD,
    Flag,
    Op,
    PeerProtocolError,
    Reply,
    Request,
    Status,
    encode_request,
    pack_oids,
    unpack_crcs,
    unpack_versions,
)
from ._wire_decode import NEED_DATA, ReplyDecoder
from ._wire_errors import reply_error

FLUSH_AT = 256 * 1024  # request bytes coalesced before they must go to the transport


def write_buffers(transport: asyncio.WriteTransport, buffers: list[Buffer]) -> None:
    """Write frames without copying big payloads.

    asyncio's writelines on Python 3.11 joins its buffers into one (a copy of
    every payload); here runs of small buffers are joined and each one of at
    least DIRECT_PAYLOAD bytes is written on its own, which the transport
    sends from the caller's memory.
    """
    small: list[Buffer] = []
    for buf in buffers:
        if memoryview(buf).nbytes < DIRECT_PAYLOAD:
            small.append(buf)
            continue
        if small:
            transport.write(b"".join(small))
            small = []
        transport.write(buf)
    if small:
        transport.write(b"".join(small))


def split_address(addr: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6 address]:port"; ValueError if malformed."""
    if addr.startswith("["):
        host, bracket, rest = addr[1:].partition("]")
        port = rest[1:] if bracket and rest.startswith(":") else ""
    else:
        host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"peer address {addr!r} is not HOST:PORT")
    return host, int(port)


class PeerPool:
    """Connections to peers, by address ("host:port" or "[v6]:port").

    Every method raises PeerUnavailable when the peer cannot be reached or
    does not answer in time (also after `aclose`), the service's own errors
    as their types, and ValueError for arguments no request could carry.
    """

    def __init__(self, timeout: float = 5.0, connect_timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conns: dict[str, _PeerConnection] = {}
        self._connecting: dict[str, asyncio.Future[_PeerConnection]] = {}
        self._ids = itertools.count(1)
        self._closed = False

    # -- the service's operations ----------------------------------------------------

    async def read(
        self, addr: str, epoch: int, oid: int, offset: int, length: int, *, raw: bool = False
    ) -> Buffer:
        """`length` bytes of `oid` from `offset` (bytes, or a bytearray for big reads)."""
        flags = Flag.RAW if raw else 0
        reply = await self._call(
            addr, Op.READ, epoch, oid=oid, offset=offset, length=length, flags=flags
        )
        if memoryview(reply.payload).nbytes != length:
            self._drop(addr, f"READ of {length} bytes answered with {len(reply.payload)}")
        return reply.payload

    async def read_object(
        self, addr: str, epoch: int, oid: int, *, raw: bool = False
    ) -> tuple[int, bytes]:
        """The object's version and its bytes, from one moment."""
        flags = Flag.RAW if raw else 0
        reply = await self._call(addr, Op.READ_OBJECT, epoch, oid=oid, flags=flags)
        data = reply.payload
        return reply.fields[0], data if isinstance(data, bytes) else bytes(data)

    async def stat(self, addr: str, epoch: int, oid: int, *, raw: bool = False) -> ObjectStat:
        flags = Flag.RAW if raw else 0
        reply = await self._call(addr, Op.STAT, epoch, oid=oid, flags=flags)
        return ObjectStat(reply.fields[0], reply.fields[1])

    async def checksums(self, addr: str, epoch: int, oid: int) -> tuple[int, int, list[int]]:
        """(version, length, CRC32 of each 64 KiB sub-block)."""
        reply = await self._call(addr, Op.CHECKSUMS, epoch, oid=oid)
        return reply.fields[0], reply.fields[1], unpack_crcs(reply.payload)

    async def write(
        self, addr: str, epoch: int, oid: int, offset: int, data: Buffer, version: int, token: int
    ) -> None:
        await self._call(
            addr, Op.WRITE, epoch, oid=oid, offset=offset, version=version, token=token,
            payload=data,
        )  # fmt: skip

    async def create(
        self, addr: str, epoch: int, oid: int, data: Buffer, version: int, token: int
    ) -> None:
        await self._call(
            addr, Op.CREATE, epoch, oid=oid, version=version, token=token, payload=data
        )

    async def remove(self, addr: str, epoch: int, oid: int, token: int) -> None:
        await self._call(addr, Op.REMOVE, epoch, oid=oid, token=token)

    async def sync(self, addr: str, epoch: int, oids: Collection[int] | None) -> None:
        """Make `oids` (every object if None) durable on the peer."""
        if oids is None:
            await self._call(addr, Op.SYNC, epoch, flags=Flag.ALL)
        else:
            await self._call(addr, Op.SYNC, epoch, payload=pack_oids(oids))

    async def list(self, addr: str, epoch: int) -> list[tuple[int, int]]:
        """Every (oid, version) the peer holds: complete, or it raises."""
        reply = await self._call(addr, Op.LIST, epoch)
        return unpack_versions(reply.payload)

    async def fence(self, addr: str, epoch: int, vid: int, token: int) -> None:
        """Raise volume `vid`'s fence on the peer to `token`."""
        await self._call(addr, Op.FENCE, epoch, oid=vid, token=token)

    async def aclose(self) -> None:
        """Close every connection (requests in flight fail with PeerUnavailable); idempotent."""
        if self._closed:
            return
        self._closed = True
        for pending in list(self._connecting.values()):
            pending.cancel()
        for conn in list(self._conns.values()):
            conn.close("the peer pool is closed")
        self._conns.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run

    # -- requests ------------------------------------------------------------------------

    async def _call(
        self,
        addr: str,
        op: Op,
        epoch: int,
        *,
        oid: int = 0,
        offset: int = 0,
        length: int = 0,
        version: int = 0,
        token: int = 0,
        flags: int = 0,
        payload: Buffer = b"",
    ) -> Reply:
        request = Request(
            op, next(self._ids), epoch, oid, offset, length, version, token, flags, payload
        )
        conn = await self._connection(addr)
        reply = await conn.call(request, self.timeout)
        if reply.op != op:
            self._drop(addr, f"{op.name} answered with a {reply.op.name} reply")
        if reply.status != Status.OK:
            raise reply_error(reply)
        return reply

    def _drop(self, addr: str, why: str) -> None:
        """Close the connection to `addr` after a reply that makes no sense; raise."""
        conn = self._conns.pop(addr, None)
        if conn is not None:
            conn.close(f"protocol error: {why}")
        raise PeerUnavailable(addr, f"protocol error: {why}")

    async def _connection(self, addr: str) -> _PeerConnection:
        conn = self._conns.get(addr)
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise PeerUnavailable(addr, "the peer pool is closed")
        connecting = self._connecting.get(addr)
        if connecting is None:  # one attempt per address, shared by every caller
            connecting = asyncio.ensure_future(self._connect(addr))
            self._connecting[addr] = connecting
            connecting.add_done_callback(lambda f: self._connected(addr, f))
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if connecting.cancelled() and task is not None and not task.cancelling():
                raise PeerUnavailable(addr, "the peer pool is closed") from None
            raise

    def _connected(self, addr: str, attempt: asyncio.Future[_PeerConnection]) -> None:
        if self._connecting.get(addr) is attempt:
            del self._connecting[addr]
        if not attempt.cancelled() and attempt.exception() is None:
            conn = attempt.result()
            if self._closed:
                conn.close("the peer pool is closed")
            else:
                self._conns[addr] = conn

    async def _connect(self, addr: str) -> _PeerConnection:
        host, port = split_address(addr)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _PeerConnection(addr), host, port)
        except TimeoutError:
            raise PeerUnavailable(addr, f"no connection in {self.connect_timeout}s") from None
        except OSError as exc:
            raise PeerUnavailable(addr, exc.strerror or str(exc)) from None
        return conn


class _PeerConnection(asyncio.BufferedProtocol):
    """One connection: requests out, replies matched to their futures by id."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.loop = asyncio.get_running_loop()
        self.decoder = ReplyDecoder()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.closed = False
        self.why = ""
        self._resumed: asyncio.Future[None] | None = None  # set while writing is paused
        self._out: list[Buffer] = []
        self._out_bytes = 0
        self._flush_scheduled = False

    async def call(self, request: Request, timeout: float) -> Reply:
        """Send `request` and wait for its reply.  Raises PeerUnavailable."""
        if self.closed:
            raise PeerUnavailable(self.addr, self.why)
        rid = request.request_id
        reply: asyncio.Future[Reply] = self.loop.create_future()
        self.pending[rid] = reply
        timer = self.loop.call_later(timeout, self._timed_out, reply, timeout)
        try:
            while self._resumed is not None and not reply.done():
                await asyncio.wait((reply, self._resumed), return_when=asyncio.FIRST_COMPLETED)
            if not reply.done():
                self._send(encode_request(request))
            return await reply
        finally:
            timer.cancel()
            self.pending.pop(rid, None)
            if reply.done() and not reply.cancelled():
                reply.exception()  # retrieved, even if our caller was cancelled meanwhile

    def _send(self, buffers: list[Buffer]) -> None:
        self._out.extend(buffers)
        self._out_bytes += sum(memoryview(b).nbytes for b in buffers)
        if self._out_bytes >= FLUSH_AT:
            self._flush_out()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_out)

    def _flush_out(self) -> None:
        self._flush_scheduled = False
        out, self._out, self._out_bytes = self._out, [], 0
        if out and self.transport is not None and not self.closed:
            write_buffers(self.transport, out)

    def _timed_out(self, reply: asyncio.Future[Reply], timeout: float) -> None:
        if not reply.done():
            self.close(f"no reply in {timeout}s")

    def close(self, why: str) -> None:
        """Abort the connection and fail every request in flight with `why`."""
        if not self.closed:
            self.closed = True
            self.why = why
            self._out.clear()
            if self.transport is not None:
                self.transport.abort()
        failure = PeerUnavailable(self.addr, self.why)
        for reply in self.pending.values():
            if not reply.done():
                reply.set_exception(failure)
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.decoder.buffer_updated(nbytes)
        while not self.closed:
            try:
                event = self.decoder.next_event()
            except PeerProtocolError as exc:
                self.close(f"protocol error: {exc}")
                return
            if event is NEED_DATA:
                return
            reply = self.pending.get(event.request_id)
            if reply is not None and not reply.done():
                reply.set_result(event)
            # else: its caller gave up on it (cancelled)

    def eof_received(self) -> bool | None:
        self.close("the peer closed the connection")
        return None

    def pause_writing(self) -> None:
        if self._resumed is None:
            self._resumed = self.loop.create_future()

    def resume_writing(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(f"connection lost: {exc}" if exc else "the peer closed the connection")
