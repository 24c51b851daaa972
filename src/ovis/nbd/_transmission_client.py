"""The client's side of the transmission phase, with no I/O.

`send(request)` returns the buffers to write; `receive_data` and
`next_event` turn the server's bytes into replies, checking that every
chunk belongs to a request in flight and stays inside its range.
"""

from __future__ import annotations

import struct

from ._constants import (
    EXTENDED_REPLY_MAGIC,
    EXTENDED_REQUEST_MAGIC,
    MAX_PAYLOAD,
    MAX_STRING,
    REPLY_FLAG_DONE,
    REQUEST_MAGIC,
    SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
    ChunkType,
    Command,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    BlockStatusChunk,
    Buffer,
    Chunk,
    DataChunk,
    DoneChunk,
    ErrorChunk,
    HoleChunk,
    Reply,
    Request,
    SimpleReply,
    _NeedData,
)
from ._transmission import (
    _BS_EXT_HEAD,
    _ERROR_HEAD,
    _EXT_EXTENT,
    _EXTENT,
    _U32,
    _U64,
    CHUNK,
    EXT_CHUNK,
    EXT_REQUEST,
    REQUEST,
    SIMPLE_REPLY,
    _Buffered,
)


class ClientTransmission(_Buffered):
    """The client's side: send requests, parse (possibly interleaved) replies."""

    def __init__(self, *, structured: bool, extended: bool = False) -> None:
        super().__init__()
        self.structured = structured or extended
        self.extended = extended
        self._in_flight: dict[int, tuple[int, int, int]] = {}  # cookie -> cmd, offset, len
        self._pending: tuple[int, int, int, int] | None = None

    def send(self, request: Request) -> list[Buffer]:
        if request.cookie in self._in_flight:
            raise LocalProtocolError(f"cookie {request.cookie:#x} is already in flight")
        if request.command == Command.WRITE and request.data is None:
            raise LocalProtocolError("WRITE needs a payload")
        if self.extended:
            head = EXT_REQUEST.pack(
                EXTENDED_REQUEST_MAGIC,
                request.flags,
                request.command,
                request.cookie,
                request.offset,
                request.length,
            )
        else:
            if request.length > 0xFFFF_FFFF:
                raise LocalProtocolError("length needs extended headers")
            head = REQUEST.pack(
                REQUEST_MAGIC,
                request.flags,
                request.command,
                request.cookie,
                request.offset,
                request.length,
            )
        if request.command != Command.DISC:
            self._in_flight[request.cookie] = (request.command, request.offset, request.length)
        return [head] if request.data is None else [head, request.data]

    def next_event(self) -> Reply | _NeedData:
        if self._pending is None:
            avail = self._available()
            if avail < 4:
                return NEED_DATA
            (magic,) = _U32.unpack_from(self._buf, self._pos)
            if magic == SIMPLE_REPLY_MAGIC and not self.extended:
                return self._simple_reply()
            if magic == STRUCTURED_REPLY_MAGIC and self.structured and not self.extended:
                if avail < CHUNK.size:
                    return NEED_DATA
                _, flags, ctype, cookie, size = CHUNK.unpack_from(self._buf, self._pos)
            elif magic == EXTENDED_REPLY_MAGIC and self.extended:
                if avail < EXT_CHUNK.size:
                    return NEED_DATA
                _, flags, ctype, cookie, _off, size = EXT_CHUNK.unpack_from(self._buf, self._pos)
            else:
                raise RemoteProtocolError(f"bad reply magic {magic:#x}")
            if cookie not in self._in_flight:
                raise RemoteProtocolError(f"reply to unknown cookie {cookie:#x}")
            if size > MAX_PAYLOAD + 64:
                raise RemoteProtocolError(f"reply chunk of {size} bytes is too large")
            self._take(EXT_CHUNK.size if self.extended else CHUNK.size)
            self._pending = (flags, ctype, cookie, size)
        flags, ctype, cookie, size = self._pending
        if self._available() < size:
            return NEED_DATA
        self._pending = None
        payload = self._take(size)
        done = bool(flags & REPLY_FLAG_DONE)
        chunk = self._decode_chunk(ctype, cookie, payload, done)
        if done:
            del self._in_flight[cookie]
        return chunk

    def _simple_reply(self) -> SimpleReply | _NeedData:
        if self._available() < SIMPLE_REPLY.size:
            return NEED_DATA
        _, error, cookie = SIMPLE_REPLY.unpack_from(self._buf, self._pos)
        entry = self._in_flight.get(cookie)
        if entry is None:
            raise RemoteProtocolError(f"reply to unknown cookie {cookie:#x}")
        command, _offset, length = entry
        if command == Command.READ and not error and not self.structured:
            if self._available() < SIMPLE_REPLY.size + length:
                return NEED_DATA
            self._take(SIMPLE_REPLY.size)
            del self._in_flight[cookie]
            return SimpleReply(cookie, 0, self._take(length))
        self._take(SIMPLE_REPLY.size)
        del self._in_flight[cookie]
        return SimpleReply(cookie, error)

    def _decode_chunk(self, ctype: int, cookie: int, payload: bytes, done: bool) -> Chunk:
        command, offset, length = self._in_flight[cookie]
        size = len(payload)
        try:
            if ctype == ChunkType.NONE:
                if size or not done:
                    raise RemoteProtocolError("NONE chunk must be empty and final")
                return DoneChunk(cookie)
            if ctype == ChunkType.OFFSET_DATA:
                (at,) = _U64.unpack_from(payload)
                data = payload[8:]
                _check_inside(command, offset, length, at, len(data))
                return DataChunk(cookie, at, data, done)
            if ctype == ChunkType.OFFSET_HOLE:
                at, n = struct.unpack(">QI", payload)
                _check_inside(command, offset, length, at, n)
                return HoleChunk(cookie, at, n, done)
            if ctype in (ChunkType.BLOCK_STATUS, ChunkType.BLOCK_STATUS_EXT):
                return _decode_block_status(ctype, cookie, payload, done)
            if ctype in (ChunkType.ERROR, ChunkType.ERROR_OFFSET):
                error, msglen = _ERROR_HEAD.unpack_from(payload)
                if msglen > MAX_STRING:
                    raise RemoteProtocolError("error message too long")
                message = payload[6 : 6 + msglen].decode("utf-8", "replace")
                at = None
                if ctype == ChunkType.ERROR_OFFSET:
                    (at,) = _U64.unpack_from(payload, 6 + msglen)
                return ErrorChunk(cookie, error, message, at, done)
        except (struct.error, ValueError) as exc:
            raise RemoteProtocolError(f"malformed chunk type {ctype}: {exc}") from exc
        raise RemoteProtocolError(f"unknown chunk type {ctype}")


def _check_inside(command: int, offset: int, length: int, at: int, n: int) -> None:
    if command != Command.READ or at < offset or at + n > offset + length:
        raise RemoteProtocolError("read chunk outside the requested range")


def _decode_block_status(ctype: int, cookie: int, payload: bytes, done: bool) -> BlockStatusChunk:
    if ctype == ChunkType.BLOCK_STATUS:
        (context_id,) = _U32.unpack_from(payload)
        body = memoryview(payload)[4:]
        if len(body) % _EXTENT.size:
            raise RemoteProtocolError("block status payload is not whole extents")
        extents = tuple(_EXTENT.iter_unpack(body))
    else:
        context_id, count = _BS_EXT_HEAD.unpack_from(payload)
        body = memoryview(payload)[8:]
        if len(body) != count * _EXT_EXTENT.size:
            raise RemoteProtocolError("block status count does not match payload")
        extents = tuple(_EXT_EXTENT.iter_unpack(body))
    return BlockStatusChunk(cookie, context_id, extents, done)
