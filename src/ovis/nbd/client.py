"""An asyncio NBD client over the sans-IO state machines.

Used by proxy mode, migration, import/export and the tests.  Requests are
pipelined: each call sends at once and waits for its own reply, which may
arrive out of order.

    client = await NbdClient.connect("nbd://127.0.0.1:10809/disk")
    data = await client.read(0, 4096)
    await client.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import ssl
import urllib.parse

from ovis._net import set_nodelay

from ._constants import DEFAULT_PORT, Command, CommandFlag, Errno
from ._constants import TransmissionFlag as TF
from ._errors import ProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    BlockStatusChunk,
    Buffer,
    DataChunk,
    ErrorChunk,
    HoleChunk,
    Reply,
    Request,
    SimpleReply,
    _NeedData,
)
from ._handshake_client import (
    ClientHandshake,
    Connected,
    Described,
    ExportDetails,
    Goal,
    Listed,
)
from ._handshake_server import StartTLS
from ._transmission_client import ClientTransmission


class NbdError(Exception):
    """The server answered a request with an error."""

    def __init__(self, errno: int, message: str = "") -> None:
        try:
            name = Errno(errno).name
        except ValueError:
            name = f"error {errno}"
        super().__init__(f"{name}: {message}" if message else name)
        self.errno = errno


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A parsed NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://)."""

    export: str
    host: str | None = None
    port: int = DEFAULT_PORT
    socket: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, uri: str) -> Address:
        parts = urllib.parse.urlsplit(uri)
        scheme = parts.scheme
        if scheme not in ("nbd", "nbds", "nbd+unix", "nbds+unix", "nbd+tcp", "nbds+tcp"):
            raise ValueError(f"{uri!r} is not an NBD URI (nbd://host:port/export)")
        export = urllib.parse.unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        tls = scheme.startswith("nbds")
        if scheme.endswith("+unix"):
            query = urllib.parse.parse_qs(parts.query)
            if "socket" not in query:
                raise ValueError(f"{uri!r} needs ?socket=PATH")
            return cls(export, socket=query["socket"][0], tls=tls)
        host = parts.hostname or "localhost"
        return cls(export, host=host, port=parts.port or DEFAULT_PORT, tls=tls)


async def _open(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # TLS, when wanted, starts inside the handshake (STARTTLS), not at connect.
    if address.socket is not None:
        return await asyncio.open_unix_connection(address.socket, limit=1 << 22)
    return await asyncio.open_connection(address.host, address.port, limit=1 << 22)


async def _handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hs: ClientHandshake,
    tls: ssl.SSLContext | None,
    host: str | None,
) -> Connected | Described | Listed:
    while True:
        event = hs.next_event()
        # Send what next_event() produced before waiting for the answer to it.
        writer.write(hs.data_to_send())
        if event is NEED_DATA:
            hs.receive_data(await reader.read(65536))
            continue
        if isinstance(event, StartTLS):
            context = tls or ssl.create_default_context()
            await writer.start_tls(context, server_hostname=host)
            hs.tls_started()
            continue
        assert isinstance(event, Connected | Described | Listed)
        return event


async def list_exports(uri: str, *, tls: ssl.SSLContext | None = None) -> list[tuple[str, str]]:
    """(name, description) of each export the server lists."""
    address = Address.parse(uri)
    reader, writer = await _open(address)
    try:
        hs = ClientHandshake(goal=Goal.LIST, tls=address.tls)
        event = await _handshake(reader, writer, hs, tls, address.host)
        assert isinstance(event, Listed)
        return list(event.exports)
    finally:
        writer.close()


async def describe(uri: str, *, tls: ssl.SSLContext | None = None) -> ExportDetails:
    """NBD_OPT_INFO for one export, without connecting to it."""
    address = Address.parse(uri)
    reader, writer = await _open(address)
    try:
        hs = ClientHandshake(address.export, goal=Goal.INFO, tls=address.tls)
        event = await _handshake(reader, writer, hs, tls, address.host)
        assert isinstance(event, Described)
        return event.export
    finally:
        writer.close()


class NbdClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connected: Connected
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.export = connected.export
        self.structured = connected.structured
        self.extended = connected.extended
        self.meta_contexts = connected.meta_contexts
        self._tx = ClientTransmission(structured=self.structured, extended=self.extended)
        self._cookies = itertools.count(1)
        self._waiting: dict[int, _Pending] = {}
        self._failure: BaseException | None = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_replies())

    @classmethod
    async def connect(
        cls,
        uri: str,
        *,
        tls: ssl.SSLContext | None = None,
        structured: bool = True,
        extended: bool = False,
        meta_contexts: tuple[str, ...] = ("base:allocation",),
    ) -> NbdClient:
        address = Address.parse(uri)
        reader, writer = await _open(address)
        try:
            hs = ClientHandshake(
                address.export,
                tls=address.tls,
                structured=structured,
                extended=extended,
                meta_contexts=meta_contexts,
            )
            event = await _handshake(reader, writer, hs, tls, address.host)
        except BaseException:
            writer.close()
            raise
        assert isinstance(event, Connected)
        set_nodelay(writer)
        return cls(reader, writer, event)

    # -- export facts --------------------------------------------------------
    @property
    def size(self) -> int:
        return self.export.size

    def has(self, flag: TF) -> bool:
        return bool(self.export.flags & flag)

    @property
    def read_only(self) -> bool:
        return self.has(TF.READ_ONLY)

    # -- commands ---------------------------------------------------------------
    async def read(self, offset: int, length: int, *, flags: int = 0) -> bytes:
        pending = await self._request(Command.READ, offset, length, flags)
        assert pending.buffer is not None
        return bytes(pending.buffer)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        flags = CommandFlag.FUA if fua else 0
        await self._request(Command.WRITE, offset, len(data), flags, data)

    async def flush(self) -> None:
        await self._request(Command.FLUSH, 0, 0, 0)

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        await self._request(Command.TRIM, offset, length, CommandFlag.FUA if fua else 0)

    async def cache(self, offset: int, length: int) -> None:
        await self._request(Command.CACHE, offset, length, 0)

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = True,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        flags = (0 if may_trim else CommandFlag.NO_HOLE) | (CommandFlag.FAST_ZERO if fast else 0)
        flags |= CommandFlag.FUA if fua else 0
        await self._request(Command.WRITE_ZEROES, offset, length, flags)

    async def block_status(
        self,
        offset: int,
        length: int,
        *,
        req_one: bool = False,
        context: str = "base:allocation",
    ) -> list[tuple[int, int]]:
        """(length, flags) extents from `offset` for one meta context."""
        flags = CommandFlag.REQ_ONE if req_one else 0
        pending = await self._request(Command.BLOCK_STATUS, offset, length, flags)
        context_id = self.meta_contexts[context]
        return pending.extents.get(context_id, [])

    async def raw_request(self, request: Request) -> _Pending:
        """Send any request as given (tests use this for hostile input)."""
        return await self._send(request)

    async def _request(
        self, command: Command, offset: int, length: int, flags: int, data: Buffer | None = None
    ) -> _Pending:
        request = Request(command, next(self._cookies), offset, length, flags, data)
        pending = await self._send(request)
        if pending.error:
            raise NbdError(pending.error, pending.message)
        return pending

    async def _send(self, request: Request) -> _Pending:
        if self._failure is not None:
            raise ConnectionError(f"NBD connection failed: {self._failure}")
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        self._waiting[request.cookie] = pending
        self._writer.writelines(self._tx.send(request))
        await self._writer.drain()
        await pending.future
        return pending

    async def _read_replies(self) -> None:
        try:
            while True:
                event = self._tx.next_event()
                if event is NEED_DATA:
                    data = await self._reader.read(1 << 20)
                    if not data:
                        raise ConnectionError("server closed the connection")
                    self._tx.receive_data(data)
                    continue
                assert not isinstance(event, _NeedData)
                self._deliver(event)
        except (ConnectionError, OSError, ProtocolError, asyncio.IncompleteReadError) as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            self._fail(ConnectionError("client closed"))
            raise

    def _deliver(self, reply: Reply) -> None:
        pending = self._waiting.get(reply.cookie)
        if pending is None:
            raise RemoteProtocolError(f"unexpected reply {reply.cookie:#x}")
        pending.absorb(reply)
        if isinstance(reply, SimpleReply) or reply.done:
            del self._waiting[reply.cookie]
            if not pending.future.done():
                pending.future.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        for pending in self._waiting.values():
            if not pending.future.done():
                pending.future.set_exception(ConnectionError(f"NBD connection lost: {exc}"))
        self._waiting.clear()

    async def aclose(self) -> None:
        """Send DISC and close; idempotent."""
        if not self._writer.is_closing():
            if self._failure is None:
                disc = Request(Command.DISC, next(self._cookies))
                self._writer.writelines(self._tx.send(disc))
            self._writer.close()
        self._reader_task.cancel()
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            await self._writer.wait_closed()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task


@dataclasses.dataclass(slots=True)
class _Pending:
    request: Request
    future: asyncio.Future[None]
    error: int = 0
    message: str = ""
    buffer: bytearray | None = None
    extents: dict[int, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)

    def absorb(self, reply: Reply) -> None:
        request = self.request
        if isinstance(reply, SimpleReply):
            self.error = reply.error
            if reply.data is not None:
                self.buffer = bytearray(reply.data)
        elif isinstance(reply, ErrorChunk):
            self.error = self.error or reply.error
            self.message = reply.message
        elif isinstance(reply, DataChunk | HoleChunk):
            if self.buffer is None:
                self.buffer = bytearray(request.length)
            start = reply.offset - request.offset
            if isinstance(reply, DataChunk):
                self.buffer[start : start + len(reply.data)] = reply.data
        elif isinstance(reply, BlockStatusChunk):
            self.extents[reply.context_id] = list(reply.extents)
        finished = isinstance(reply, SimpleReply) or reply.done
        if request.command == Command.READ and self.buffer is None and not self.error and finished:
            self.buffer = bytearray(request.length)  # an all-hole (or empty) read
