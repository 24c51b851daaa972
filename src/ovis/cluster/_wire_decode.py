"""Decoding peer-protocol frames from a byte stream (see _wire for the layout).

`RequestDecoder` (server side) and `ReplyDecoder` (client side) are fed
what the socket delivers and hand back whole frames; payloads of at least
DIRECT_PAYLOAD bytes are received straight into a buffer of their own.
"""

from __future__ import annotations

import enum
import struct
from typing import Generic, TypeVar

from ovis.block._device import Buffer

from ._wire import (
    DIRECT_PAYLOAD,
    OPS,
    REPLY_HEADER,
    REPLY_MAGIC,
    REQUEST_HEADER,
    REQUEST_MAGIC,
    STATUSES,
    Op,
    PeerProtocolError,
    Reply,
    Request,
    Status,
    check_reply,
    check_request,
)

M = TypeVar("M", Op, Status)


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
F = TypeVar("F", Request, Reply)


class _FrameReader(Generic[F]):
    """Frames from a byte stream: `receive_data` (or get_buffer/buffer_updated), then
    `next_event()` until it returns NEED_DATA.

    Small frames are parsed out of a fixed scratch buffer; a payload of at
    least DIRECT_PAYLOAD bytes gets a buffer of its own.  Through get_buffer,
    the scratch never grows: the caller must drain next_event() before asking
    for more room (RuntimeError otherwise).  receive_data grows it as needed,
    so a caller feeding many frames at once should drain between feeds.
    """

    _header: struct.Struct
    _magic: int

    def __init__(self, scratch_size: int = 256 * 1024) -> None:
        if scratch_size < self._header.size + DIRECT_PAYLOAD:
            raise ValueError("scratch buffer is too small for a frame below DIRECT_PAYLOAD")
        self._scratch = bytearray(scratch_size)
        self._view = memoryview(self._scratch)  # slices of it copy once, not twice
        self._start = 0
        self._end = 0
        self._pending: tuple[int, ...] | None = None  # a parsed header awaiting its payload
        self._payload: bytearray | None = None  # a big payload being received
        self._filled = 0
        self._failed = False

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes should go (then call buffer_updated)."""
        if self._payload is not None:
            return memoryview(self._payload)[self._filled :]
        if len(self._scratch) - self._end < DIRECT_PAYLOAD and self._start:
            unread = self._end - self._start
            self._view[:unread] = self._view[self._start : self._end]
            self._start, self._end = 0, unread
        if self._end == len(self._scratch):
            raise RuntimeError("drain next_event() before receiving more data")
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were written at the start of the last get_buffer()."""
        if self._payload is not None:
            self._filled += nbytes
        else:
            self._end += nbytes

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes received from the peer."""
        with memoryview(data) as whole, whole.cast("B") as view:
            at = 0
            while at < len(view):
                if self._payload is None and self._end == len(self._scratch):
                    self._grow()
                with self.get_buffer() as room:
                    n = min(len(room), len(view) - at)
                    room[:n] = view[at : at + n]
                self.buffer_updated(n)
                at += n

    def _grow(self) -> None:
        unread = self._scratch[self._start : self._end]
        self._scratch = bytearray(2 * len(self._scratch))
        self._scratch[: len(unread)] = unread
        self._view = memoryview(self._scratch)
        self._start, self._end = 0, len(unread)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return self._end - self._start + self._filled

    def next_event(self) -> F | _NeedData:
        """The next complete frame, or NEED_DATA.  Raises PeerProtocolError."""
        if self._failed:
            raise PeerProtocolError("the stream is already broken")
        try:
            return self._next()
        except PeerProtocolError:
            self._failed = True
            raise

    def _next(self) -> F | _NeedData:
        if self._pending is None:
            if self._end - self._start < self._header.size:
                return NEED_DATA
            values = self._header.unpack_from(self._scratch, self._start)
            if values[0] != self._magic:
                raise PeerProtocolError(f"bad magic {values[0]:#010x}")
            if values[3]:
                raise PeerProtocolError("reserved header bits are set")
            try:
                self._check_header(values)
            except ValueError as exc:
                raise PeerProtocolError(str(exc)) from None
            self._start += self._header.size
            self._pending = values
        size = self._pending[-1]
        payload: Buffer
        if self._payload is not None:
            if self._filled < size:
                return NEED_DATA
            payload, self._payload, self._filled = self._payload, None, 0
        elif self._end - self._start >= size:
            payload = bytes(self._view[self._start : self._start + size]) if size else b""
            self._start += size
        elif size >= DIRECT_PAYLOAD:
            have = self._end - self._start
            self._payload = bytearray(size)
            self._payload[:have] = self._view[self._start : self._end]
            self._filled = have
            self._start = self._end = 0
            return NEED_DATA
        else:
            return NEED_DATA
        values, self._pending = self._pending, None
        if self._start == self._end:
            self._start = self._end = 0
        try:
            return self._build(values, payload)
        except ValueError as exc:
            raise PeerProtocolError(str(exc)) from None

    def _check_header(self, values: tuple[int, ...]) -> None:
        raise NotImplementedError

    def _build(self, values: tuple[int, ...], payload: Buffer) -> F:
        raise NotImplementedError


class RequestDecoder(_FrameReader[Request]):
    """The server's side: bytes in, Requests out."""

    _header = REQUEST_HEADER
    _magic = REQUEST_MAGIC

    def _check_header(self, values: tuple[int, ...]) -> None:
        _, op, flags, _, _, _, oid, offset, length, version, token, size = values
        check_request(_member(OPS, op, "op"), flags, (oid, offset, length, version, token), size)

    def _build(self, values: tuple[int, ...], payload: Buffer) -> Request:
        _, op, flags, _, rid, epoch, oid, offset, length, version, token, _ = values
        return Request(OPS[op], rid, epoch, oid, offset, length, version, token, flags, payload)


class ReplyDecoder(_FrameReader[Reply]):
    """The client's side: bytes in, Replies out."""

    _header = REPLY_HEADER
    _magic = REPLY_MAGIC

    def _check_header(self, values: tuple[int, ...]) -> None:
        _, op, status, _, _, a, b, c, size = values
        check_reply(_member(OPS, op, "op"), _member(STATUSES, status, "status"), (a, b, c), size)

    def _build(self, values: tuple[int, ...], payload: Buffer) -> Reply:
        _, op, status, _, rid, a, b, c, _ = values
        return Reply(OPS[op], rid, STATUSES[status], (a, b, c), payload)


def _member(members: dict[int, M], value: int, what: str) -> M:
    try:
        return members[value]
    except KeyError:
        raise ValueError(f"unknown {what} {value}") from None
