"""Transmission phase framing and the server's state machine, with no I/O.

The client's machine is in _transmission_client.  Both use the same shape:
`receive_data(bytes)` buffers input, `next_event()` returns one parsed event
or `NEED_DATA`, and `send(event)` returns the buffers to write (header and
payload separately, so a READ payload is never copied into a joined message).

Framing after the handshake is fixed by two negotiated facts: whether
structured replies are on, and whether extended headers are on (which implies
structured replies and widens lengths to 64 bits).
"""

from __future__ import annotations

import struct

from ._constants import (
    EXTENDED_REPLY_MAGIC,
    EXTENDED_REQUEST_MAGIC,
    MAX_PAYLOAD,
    REPLY_FLAG_DONE,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
    ChunkType,
    Command,
    CommandFlag,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    BlockStatusChunk,
    Buffer,
    Chunk,
    DataChunk,
    ErrorChunk,
    HoleChunk,
    Reply,
    Request,
    SimpleReply,
    _NeedData,
)

REQUEST = struct.Struct(">IHHQQI")
EXT_REQUEST = struct.Struct(">IHHQQQ")
SIMPLE_REPLY = struct.Struct(">IIQ")
CHUNK = struct.Struct(">IHHQI")
EXT_CHUNK = struct.Struct(">IHHQQQ")
_DATA_HEAD = struct.Struct(">IHHQIQ")  # CHUNK + the OFFSET_DATA chunk's offset
_EXT_DATA_HEAD = struct.Struct(">IHHQQQQ")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ERROR_HEAD = struct.Struct(">IH")
_EXTENT = struct.Struct(">II")
_EXT_EXTENT = struct.Struct(">QQ")
_BS_EXT_HEAD = struct.Struct(">II")

# WRITE payloads at least this large are received into their own buffer.
DIRECT_PAYLOAD = 64 * 1024
# One such buffer, once given back (`recycle`), is kept for the next payload of
# the same size, up to this size: a stream of 1 MiB writes then reuses one
# buffer instead of allocating and clearing a new one for each (10-15% less
# server CPU per GiB written).  It counts against nothing: it is far below the
# bytes a connection may have in progress (ServerLimits.max_buffer).
SPARE_MAX = 2 * 1024 * 1024
_OFFSET_DATA, _NONE = int(ChunkType.OFFSET_DATA), int(ChunkType.NONE)
# Commands whose request carries a payload of `length` bytes.
_PAYLOAD_COMMANDS = frozenset({Command.WRITE})


class _Buffered:
    """An input buffer with a consumption cursor and a discard counter."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0  # bytes still to discard unread
        self.closed = False

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        if not data:
            self.closed = True
            return
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = memoryview(data)[n:]
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events (for back-pressure)."""
        return len(self._buf) - self._pos

    def _available(self) -> int:
        return len(self._buf) - self._pos

    def _take(self, n: int) -> bytes:
        with memoryview(self._buf) as view:
            data = bytes(view[self._pos : self._pos + n])
        self._consume(n)
        return data

    def _consume(self, n: int) -> None:
        self._pos += n
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 1 << 20:
            del self._buf[: self._pos]
            self._pos = 0

    def _discard(self, n: int) -> None:
        have = min(n, self._available())
        self._consume(have)
        self._skip += n - have


class ServerTransmission(_Buffered):
    """The server's side of the transmission phase."""

    def __init__(
        self, *, structured: bool, extended: bool = False, max_payload: int = MAX_PAYLOAD
    ) -> None:
        super().__init__()
        self.structured = structured or extended
        self.extended = extended
        self.max_payload = max_payload
        self._header = EXT_REQUEST if extended else REQUEST
        self._magic = EXTENDED_REQUEST_MAGIC if extended else REQUEST_MAGIC
        self._pending: tuple[int, int, int, int, int] | None = None
        self._dropping = False  # the pending request's payload is being skipped
        self._in_flight: dict[int, int] = {}  # cookie -> request offset
        self.disconnected = False
        self._payload: bytearray | None = None  # a large WRITE payload being received
        self._filled = 0
        self._scratch = bytearray(DIRECT_PAYLOAD)
        self._spare: bytearray | None = None  # a recycled payload buffer

    # Large WRITE payloads are received straight into a buffer of their own
    # (get_buffer/buffer_updated, as asyncio.BufferedProtocol calls them):
    # the kernel copies into it once, instead of three copies via _buf.
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes should be written."""
        if self._payload is not None:
            return memoryview(self._payload)[self._filled :]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written into the buffer from get_buffer()."""
        if self._payload is not None:
            self._filled += nbytes
        else:
            with memoryview(self._scratch) as view:
                self.receive_data(view[:nbytes])

    def receive_data(self, data: Buffer) -> None:
        if self._payload is not None and data:
            n = min(len(data), len(self._payload) - self._filled)
            self._payload[self._filled : self._filled + n] = memoryview(data)[:n]
            self._filled += n
            data = memoryview(data)[n:]
            if not data:
                return
        super().receive_data(data)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def next_event(self) -> Request | _NeedData:
        """Parse the next request.

        Raises RemoteProtocolError for a bad magic number or a cookie that is
        already in flight; the caller must then close the connection.
        """
        if self.disconnected:
            return NEED_DATA
        if self._pending is None:
            if self._available() < self._header.size:
                return NEED_DATA
            magic, flags, command, cookie, offset, length = self._header.unpack_from(
                self._buf, self._pos
            )
            if magic != self._magic:
                raise RemoteProtocolError(f"bad request magic {magic:#x}")
            self._consume(self._header.size)
            self._pending = (flags, command, cookie, offset, length)
        flags, command, cookie, offset, length = self._pending
        if cookie in self._in_flight:
            raise RemoteProtocolError(f"cookie {cookie:#x} is already in flight")
        has_payload = command in _PAYLOAD_COMMANDS or (
            self.extended and flags & CommandFlag.PAYLOAD_LEN
        )
        data: bytes | bytearray | None = None
        dropped = False
        if has_payload:
            if length > self.max_payload or command not in _PAYLOAD_COMMANDS:
                # Too big to buffer (or a payload we never asked for): skip it
                # without holding it in memory; the request gets an error, but
                # only once the payload is gone: a client still sending it
                # (libnbd) cannot match a reply to it and hangs up.
                if not self._dropping:
                    self._discard(length)
                    self._dropping = True
                if self._skip:
                    return NEED_DATA
                self._dropping = False
                dropped = True
            elif self._payload is not None:
                if self._filled < length:
                    return NEED_DATA
                data, self._payload = self._payload, None
            elif self._available() >= length:
                data = self._take(length)
            elif length >= DIRECT_PAYLOAD:
                self._start_direct_payload(length)
                return NEED_DATA
            else:
                return NEED_DATA
        self._pending = None
        if command == Command.DISC:
            self.disconnected = True
        else:
            self._in_flight[cookie] = offset
        return Request(command, cookie, offset, length, flags, data, dropped)

    def recycle(self, payload: Buffer | None) -> None:
        """Give back a WRITE payload that nothing refers to any more."""
        if type(payload) is bytearray and DIRECT_PAYLOAD <= len(payload) <= SPARE_MAX:
            self._spare = payload

    def _start_direct_payload(self, length: int) -> None:
        spare, self._spare = self._spare, None
        self._payload = spare if spare is not None and len(spare) == length else bytearray(length)
        self._filled = have = self._available()
        with memoryview(self._buf) as view:
            self._payload[:have] = view[self._pos : self._pos + have]
        self._consume(have)

    def send(self, reply: Reply) -> list[Buffer]:
        """Encode a reply; the returned buffers are written in order."""
        offset = self._in_flight.get(reply.cookie)
        if offset is None:
            raise LocalProtocolError(f"no request with cookie {reply.cookie:#x} is in flight")
        if isinstance(reply, SimpleReply):
            if self.structured and self.extended:
                raise LocalProtocolError("simple replies are not allowed with extended headers")
            del self._in_flight[reply.cookie]
            head = SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, reply.error, reply.cookie)
            return [head] if reply.data is None else [head, reply.data]
        if not self.structured:
            raise LocalProtocolError("structured replies were not negotiated")
        if reply.done:
            del self._in_flight[reply.cookie]
        chunk_type, payload = _encode_chunk(reply, self.extended)
        flags = REPLY_FLAG_DONE if reply.done else 0
        size = sum(len(p) for p in payload)
        if self.extended:
            head = EXT_CHUNK.pack(
                EXTENDED_REPLY_MAGIC, flags, chunk_type, reply.cookie, offset, size
            )
        else:
            head = CHUNK.pack(STRUCTURED_REPLY_MAGIC, flags, chunk_type, reply.cookie, size)
        return [head, *payload]

    # The server's hot path: a successful READ or WRITE, encoded as `send`
    # would encode its reply, without building the reply event first.
    def send_data_head(self, cookie: int, offset: int, length: int) -> bytes:
        """The header of a successful READ reply; the caller sends its `length` bytes."""
        if self._in_flight.pop(cookie, None) is None:
            raise LocalProtocolError(f"no request with cookie {cookie:#x} is in flight")
        if not self.structured:
            return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, cookie)
        if self.extended:
            return _EXT_DATA_HEAD.pack(
                EXTENDED_REPLY_MAGIC,
                REPLY_FLAG_DONE,
                _OFFSET_DATA,
                cookie,
                offset,
                length + 8,
                offset,
            )
        return _DATA_HEAD.pack(
            STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, _OFFSET_DATA, cookie, length + 8, offset
        )

    def send_done(self, cookie: int) -> bytes:
        """The reply to a successful request that returns no data (a WRITE)."""
        offset = self._in_flight.pop(cookie, None)
        if offset is None:
            raise LocalProtocolError(f"no request with cookie {cookie:#x} is in flight")
        if self.extended:
            return EXT_CHUNK.pack(EXTENDED_REPLY_MAGIC, REPLY_FLAG_DONE, _NONE, cookie, offset, 0)
        return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, cookie)


def _encode_chunk(chunk: Chunk, extended: bool) -> tuple[int, list[Buffer]]:
    if isinstance(chunk, DataChunk):
        return ChunkType.OFFSET_DATA, [_U64.pack(chunk.offset), chunk.data]
    if isinstance(chunk, HoleChunk):
        return ChunkType.OFFSET_HOLE, [struct.pack(">QI", chunk.offset, chunk.length)]
    if isinstance(chunk, BlockStatusChunk):
        if extended:
            head = _BS_EXT_HEAD.pack(chunk.context_id, len(chunk.extents))
            body = b"".join(_EXT_EXTENT.pack(n, f) for n, f in chunk.extents)
            return ChunkType.BLOCK_STATUS_EXT, [head + body]
        if any(n > 0xFFFF_FFFF or f > 0xFFFF_FFFF for n, f in chunk.extents):
            raise LocalProtocolError("extent does not fit 32 bits without extended headers")
        body = b"".join(_EXTENT.pack(n, f) for n, f in chunk.extents)
        return ChunkType.BLOCK_STATUS, [_U32.pack(chunk.context_id) + body]
    if isinstance(chunk, ErrorChunk):
        message = chunk.message.encode()
        head = _ERROR_HEAD.pack(chunk.error, len(message)) + message
        if chunk.offset is None:
            return ChunkType.ERROR, [head]
        return ChunkType.ERROR_OFFSET, [head + _U64.pack(chunk.offset)]
    return ChunkType.NONE, []
