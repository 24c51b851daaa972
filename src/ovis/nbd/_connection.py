"""One NBD connection as an asyncio BufferedProtocol: handshake → attach → transmission.

Requests start eagerly and become tasks only if they must wait, so replies
may go out of order.  Memory is bounded by `ServerLimits`: reading from the
socket pauses while too many requests or too many payload bytes are in
progress, or while the peer is not reading our replies.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, cast

from ovis._net import set_nodelay, widen_unix_send_buffer
from ovis.block._checked import CheckedDevice
from ovis.block._device import BlockDevice

from ._catalog import Refreshable
from ._constants import Command, Errno
from ._dispatch import Dispatcher
from ._eager import start_eagerly
from ._errors import ProtocolError
from ._events import NEED_DATA, ErrorChunk, Reply, Request, SimpleReply
from ._handshake_server import Aborted, Lookup, Ready, ServerHandshake, StartTLS
from ._replies import FileSlice, ReplyWriter
from ._transmission import ServerTransmission

if TYPE_CHECKING:
    from .server import NbdServer

log = logging.getLogger("ovis.nbd")
LOOKUP_REFRESH_TIMEOUT = 5.0  # seconds a handshake waits for its catalog to refresh
_READ, _WRITE = int(Command.READ), int(Command.WRITE)


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: NbdServer, adopted: tuple[Ready, bytes] | None = None) -> None:
        self.server = server
        self.adopted = adopted
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.handshake: ServerHandshake | None = None
        self.tx: ServerTransmission | None = None
        self.dispatcher: Dispatcher | None = None
        self.device: BlockDevice | None = None
        self.busy = 0  # requests (and the attach step) in progress
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs to suspended ones
        self._pumping = False
        self.bytes_in_progress = 0
        self.reading = True
        self.write_paused = False
        self.stopping = False  # DISC received or server draining
        self.last_activity = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._released = False
        self._handshake_buffer = bytearray(64 * 1024)
        # Requests that arrive between the end of the handshake and the device
        # being ready (pause_reading is a request, not a guarantee).
        self._early: bytearray | None = None
        self._looking_up = False  # the handshake waits for its catalog to refresh
        self.replies: ReplyWriter | None = None

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        widen_unix_send_buffer(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            self.peer = transport.get_extra_info("peername")[0]
        count = len(self.server.connections) + self.server.external_connections()
        if self.server._closing or count >= self.limits.max_connections:
            log.warning("refusing connection from %s: server full or stopping", self.peer)
            transport.close()
            return
        self.server.connections.add(self)
        if self.adopted is not None:
            self._start_transmission(*self.adopted)
            return
        catalog = self.server.backend.catalog(self.peer)
        self.handshake = ServerHandshake(catalog, self.server.tls_mode)
        transport.write(self.handshake.data_to_send())
        self._timer = self.loop.call_later(self.limits.handshake_timeout, self._handshake_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.tx is not None:
            return self.tx.get_buffer(sizehint)
        return memoryview(self._handshake_buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_activity = time.monotonic()
        if self.tx is not None:
            self.tx.buffer_updated(nbytes)
            self._pump()
        elif self._early is not None:  # negotiated, device still opening
            self._early += self._handshake_buffer[:nbytes]
        elif self.handshake is not None:
            self.handshake.receive_data(self._handshake_buffer[:nbytes])
            if not self._looking_up:  # else driven again once the catalog is refreshed
                self._drive_handshake()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self.stopping = True
        if not self.busy:
            self._release()

    # -- handshake -----------------------------------------------------------
    def _close(self, reason: str) -> None:
        log.info("closing connection from %s: %s", self.peer or "unix socket", reason)
        if self.transport is not None:
            self.transport.close()

    def _handshake_timeout(self) -> None:
        if self.tx is None:
            self._close("handshake timed out")

    def _drive_handshake(self) -> None:
        hs, transport = self.handshake, self.transport
        assert hs is not None and transport is not None
        try:
            event = hs.next_event()
        except ProtocolError as exc:
            transport.write(hs.data_to_send())
            self._close(f"handshake: {exc}")
            return
        transport.write(hs.data_to_send())
        if isinstance(event, StartTLS):
            self.loop.create_task(self._start_tls())
        elif isinstance(event, Aborted):
            self._close("client aborted the handshake")
        elif isinstance(event, Ready):
            self._start_transmission(event, hs.trailing_data())
        elif isinstance(event, Lookup):
            self._looking_up = True
            self._keep(self.loop.create_task(self._refresh_catalog(hs, event.name)))

    async def _refresh_catalog(self, hs: ServerHandshake, name: str) -> None:
        """A client asked for a name the catalog does not know (yet): refresh, go on."""
        catalog = hs.catalog
        assert isinstance(catalog, Refreshable)
        try:
            await asyncio.wait_for(catalog.refresh(), LOOKUP_REFRESH_TIMEOUT)
        except Exception as exc:  # the option is answered from what is known
            log.warning("cannot refresh the exports for %r: %s", name, exc)
        self._looking_up = False
        if self.handshake is hs and self.transport is not None and not self.transport.is_closing():
            self._drive_handshake()

    def _start_transmission(self, ready: Ready, trailing: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self._early = bytearray(trailing)
        transport.pause_reading()
        self.reading = False
        handoff = self.server.handoff
        if handoff is not None and not ready.tls and not transport.get_write_buffer_size():
            sock = transport.get_extra_info("socket")
            if sock is not None and handoff(sock, ready, bytes(self._early)):
                self.handshake = None
                transport.close()  # the other process holds its own copy of the socket
                return
        self._keep(self.loop.create_task(self._attach(ready)))

    async def _start_tls(self) -> None:
        assert self.transport is not None and self.handshake is not None
        assert self.server.tls is not None
        try:
            transport = await self.loop.start_tls(
                self.transport, self, self.server.tls, server_side=True
            )
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._close(f"TLS handshake failed: {exc}")
            return
        if transport is None:
            return
        self.transport = transport
        self.handshake.tls_started()
        self._drive_handshake()

    async def _attach(self, ready: Ready) -> None:
        assert self.transport is not None
        try:
            device = await self.server.backend.connect(ready.export, self.peer)
        except Exception as exc:  # the backend could not open it: refuse cleanly
            log.warning("cannot open export %r: %s", ready.export.name, exc)
            self.transport.close()
            return
        if self._released or self.transport.is_closing():
            await _close_quietly(device)  # the client left while we were opening
            return
        self.device = CheckedDevice(device)
        self.replies = ReplyWriter(self.transport, zero_copy=not ready.tls)
        self.dispatcher = Dispatcher(
            self.device,
            ready.export.flags,
            structured=ready.structured,
            extended=ready.extended,
            meta_contexts=ready.meta_contexts,
            zero_copy=self.replies.zero_copy,
        )
        self.tx = ServerTransmission(
            structured=ready.structured,
            extended=ready.extended,
            max_payload=device.capabilities.max_block,
        )
        if self._timer is not None:
            self._timer.cancel()
        if self.limits.idle_timeout:
            self._timer = self.loop.call_later(self.limits.idle_timeout, self._check_idle)
        early, self._early = self._early, None
        if early:
            self.tx.receive_data(early)
        self._pump()

    # -- transmission ----------------------------------------------------------
    def _check_idle(self) -> None:
        timeout = self.limits.idle_timeout
        assert timeout is not None
        idle = time.monotonic() - self.last_activity
        if not self.busy and idle >= timeout:
            self._close(f"idle for {idle:.0f}s")
        else:
            self._timer = self.loop.call_later(max(timeout - idle, 1.0), self._check_idle)

    def _set_reading(self, on: bool) -> None:
        if on != self.reading and self.transport is not None and not self.transport.is_closing():
            self.reading = on
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pump(self) -> None:
        """Start every request that fits the limits; re-entrant calls are no-ops."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._pump_requests()
        finally:
            self._pumping = False

    def _pump_requests(self) -> None:
        tx, dispatcher, replies = self.tx, self.dispatcher, self.replies
        if tx is None or dispatcher is None or replies is None or self.stopping:
            return
        while True:
            if (
                self.write_paused
                or self.busy >= self.limits.max_requests
                or self.bytes_in_progress >= self.limits.max_buffer
            ):
                self._set_reading(False)
                return
            try:
                event = tx.next_event()
            except ProtocolError as exc:
                self._close(f"protocol error: {exc}")
                self.stopping = True
                return
            if event is NEED_DATA:
                self._set_reading(True)
                return
            assert isinstance(event, Request)
            if event.command == Command.DISC:
                self.stopping = True
                self._set_reading(False)
                if not self.busy:
                    self._keep(self.loop.create_task(self._finish()))
                return
            command = event.command
            if command == _READ:  # served at once if it can be: see Dispatcher.read_now
                data = dispatcher.read_now(event)
                if data is not None:
                    head = tx.send_data_head(event.cookie, event.offset, event.length)
                    if isinstance(data, FileSlice):
                        replies.add_file(head, data)
                    else:
                        replies.add([head, data])
                    continue
            elif command == _WRITE and dispatcher.write_now(event):
                replies.add([tx.send_done(event.cookie)])
                tx.recycle(event.data)  # written and let go: it can take the next payload
                continue
            cost = event.length if command in (_READ, _WRITE) else 0
            self.bytes_in_progress += cost
            self.busy += 1
            task = start_eagerly(self._serve(event, cost))
            if task is not None:
                self._keep(task)

    async def _serve(self, request: Request, cost: int) -> None:
        assert self.dispatcher is not None and self.tx is not None and self.replies is not None
        try:
            try:
                replies = await self.dispatcher.execute(request)
            except Exception:
                log.exception("request %s failed unexpectedly", request.command)
                replies = self._io_error(request)
            for reply in replies:
                self.replies.add(self.tx.send(reply))
        finally:
            self.bytes_in_progress -= cost
            self.busy -= 1
            self.last_activity = time.monotonic()
            if not self.stopping:
                self._pump()
            elif not self.busy:
                await self._finish()

    def _io_error(self, request: Request) -> list[Reply]:
        assert self.tx is not None
        if self.tx.structured:
            return [ErrorChunk(request.cookie, Errno.EIO, "internal error")]
        return [SimpleReply(request.cookie, Errno.EIO)]

    async def _finish(self) -> None:
        """All requests are done after DISC, drain or a lost connection."""
        device = self.device  # None once released
        if device is not None and device.capabilities.can_write and device.capabilities.can_flush:
            try:
                await device.flush()  # a courtesy: only FLUSH/FUA promise durability
            except Exception as exc:
                log.warning("flush on disconnect failed: %s", exc)
        if self.replies is not None:
            self.replies.flush()
        if self.transport is not None:
            self.transport.close()
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.replies is not None:
            self.replies.close()
        device, self.device = self.device, None
        if device is not None:
            self.loop.create_task(_close_quietly(device)).add_done_callback(
                lambda _: self.closed.set()
            )
        else:
            self.closed.set()

    async def drain(self) -> None:
        if self.tx is None:
            self._close("server stopping")
        elif not self.stopping:
            self.stopping = True
            self._set_reading(False)
            if not self.busy:
                await self._finish()
        await self.closed.wait()


async def _close_quietly(device: BlockDevice) -> None:
    try:
        await device.aclose()
    except Exception as exc:
        log.warning("closing device failed: %s", exc)
