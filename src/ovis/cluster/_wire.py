"""The peer protocol between storage nodes, with no I/O (in the manner of h11).

A connection carries requests one way and replies the other, pipelined:
each request has a u64 id its reply repeats, and replies may come in any
order.  All integers are big-endian.

```
request  (60 bytes)  magic "OVRQ" u32 | op u8 | flags u8 | reserved u16 = 0 |
                     request id u64 | epoch u64 | oid u64 | offset u32 |
                     length u32 | version u64 | token u64 | payload length u32
                     then the payload
reply    (44 bytes)  magic "OVRP" u32 | op u8 | status u8 | reserved u16 = 0 |
                     request id u64 | field0 u64 | field1 u64 | field2 u64 |
                     payload length u32, then the payload
```

What each op uses (every other field must be zero):

| op          | request                                 | OK reply                          |
|-------------|-----------------------------------------|-----------------------------------|
| READ        | oid offset length, flag RAW             | payload = the bytes               |
| READ_OBJECT | oid, flag RAW                           | field0 version, payload = object  |
| STAT        | oid, flag RAW                           | field0 version, field1 length     |
| CHECKSUMS   | oid                                     | version, length, payload u32 CRCs |
| WRITE       | oid offset version token, payload data  |                                   |
| CREATE      | oid version token, payload data         |                                   |
| REMOVE      | oid token                               |                                   |
| SYNC        | payload u64 oids, or flag ALL           |                                   |
| LIST        |                                         | payload (oid u64, version u64)... |
| FENCE       | oid = volume id, token                  |                                   |

An error reply has a non-zero status naming the exception type, its numeric
attributes in field0..2 and its message (UTF-8, at most MAX_MESSAGE bytes)
as payload, so the client re-raises the type the service raised, with the
same fields (`error_reply` / `reply_error`).

Every frame is bounded before its payload is buffered: data payloads by
MAX_OBJECT_SIZE, a LIST reply by MAX_LIST_BYTES (16 bytes per object: 16 Mi
objects), SYNC by MAX_SYNC_OIDS.  Bytes that are not a valid frame raise
PeerProtocolError; the connection must then be closed.  Payloads of at least
DIRECT_PAYLOAD bytes are received straight into a buffer of their own
(`get_buffer`/`buffer_updated`, as asyncio.BufferedProtocol calls them).
"""

from __future__ import annotations

import array
import dataclasses
import enum
import struct
import sys
from collections.abc import Iterable
from typing import Generic, TypeVar

from ovis.block._device import BlockError, Buffer
from ovis.nbd._constants import Errno
from ovis.store import (
    MAX_OBJECT_SIZE,
    ChecksumError,
    ObjectNotFound,
    StaleVersion,
    StoreClosed,
)
from ovis.store._format import SUB_BLOCK

from ._model import Fenced, NotAccepting, PeerUnavailable, WrongEpoch

REQUEST_MAGIC = 0x4F565251  # "OVRQ"
REPLY_MAGIC = 0x4F565250  # "OVRP"
REQUEST_HEADER = struct.Struct(">IBBHQQQIIQQI")
REPLY_HEADER = struct.Struct(">IBBHQQQQI")
MAX_LIST_BYTES = 256 * 1024 * 1024
MAX_SYNC_OIDS = 1 << 20
MAX_MESSAGE = 4096
MAX_VID = 0xFFFFFF
DIRECT_PAYLOAD = 64 * 1024
_U64 = (1 << 64) - 1
_BIG_ENDIAN = sys.byteorder == "big"


class PeerProtocolError(Exception):
    """The peer sent bytes that are not a valid frame: close the connection."""


class Op(enum.IntEnum):
    READ = 1
    READ_OBJECT = 2
    STAT = 3
    CHECKSUMS = 4
    WRITE = 5
    CREATE = 6
    REMOVE = 7
    SYNC = 8
    LIST = 9
    FENCE = 10


class Flag:
    """Request flag bits (plain ints: enum.IntFlag arithmetic is slow on the hot path)."""

    RAW = 1  # skip the service's ensure_current hook (recovery's own reads)
    ALL = 2  # SYNC every object


class Status(enum.IntEnum):
    OK = 0
    OBJECT_NOT_FOUND = 1  # field0 oid
    STALE_VERSION = 2  # oid, version, current
    CHECKSUM = 3  # oid
    WRONG_EPOCH = 4  # theirs, ours
    FENCED = 5  # vid, token, newest
    NOT_ACCEPTING = 6
    STORE_CLOSED = 7
    PEER_UNAVAILABLE = 8  # payload: peer, NUL, message
    BLOCK_ERROR = 9  # errno


# op -> (request fields it uses, flags it allows)
_REQUEST_USES: dict[Op, tuple[frozenset[str], int]] = {
    Op.READ: (frozenset({"oid", "offset", "length"}), Flag.RAW),
    Op.READ_OBJECT: (frozenset({"oid"}), Flag.RAW),
    Op.STAT: (frozenset({"oid"}), Flag.RAW),
    Op.CHECKSUMS: (frozenset({"oid"}), 0),
    Op.WRITE: (frozenset({"oid", "offset", "version", "token"}), 0),
    Op.CREATE: (frozenset({"oid", "version", "token"}), 0),
    Op.REMOVE: (frozenset({"oid", "token"}), 0),
    Op.SYNC: (frozenset(), Flag.ALL),
    Op.LIST: (frozenset(), 0),
    Op.FENCE: (frozenset({"oid", "token"}), 0),
}
_FIELDS = ("oid", "offset", "length", "version", "token")
# The same as positions of the fields that must be zero, for the per-frame check.
_REQUEST_RULES = {
    op: (tuple(i for i, name in enumerate(_FIELDS) if name not in uses), allowed)
    for op, (uses, allowed) in _REQUEST_USES.items()
}
# Wire values to enum members by dict: calling an enum class is slow.
_OPS = {int(op): op for op in Op}
_STATUSES = {int(status): status for status in Status}
# How many of field0..2 an OK reply (by op) or an error reply (by status) uses.
_OK_FIELDS = {Op.READ_OBJECT: 1, Op.STAT: 2, Op.CHECKSUMS: 2}
_ERROR_FIELDS = {
    Status.OBJECT_NOT_FOUND: 1,
    Status.STALE_VERSION: 3,
    Status.CHECKSUM: 1,
    Status.WRONG_EPOCH: 2,
    Status.FENCED: 3,
    Status.BLOCK_ERROR: 1,
}


def _nbytes(payload: Buffer) -> int:
    return memoryview(payload).nbytes


def _check_request(
    op: Op, flags: int, values: tuple[int, int, int, int, int], payload_len: int
) -> None:
    """Raise ValueError unless these header values make a valid request."""
    unused, allowed = _REQUEST_RULES[op]
    if flags & ~allowed:
        raise ValueError(f"{op.name} does not take flags {flags:#x}")
    for i in unused:
        if values[i]:
            raise ValueError(f"{op.name} does not use {_FIELDS[i]}")
    oid, offset, length, _, _ = values
    if op == Op.READ and offset + length > MAX_OBJECT_SIZE:
        raise ValueError(f"READ [{offset}, {offset + length}) is outside an object")
    if op in (Op.WRITE, Op.CREATE):
        if offset + payload_len > MAX_OBJECT_SIZE:
            raise ValueError(f"{op.name} [{offset}, {offset + payload_len}) is outside an object")
    elif op == Op.SYNC:
        if flags & Flag.ALL and payload_len:
            raise ValueError("SYNC ALL takes no oids")
        if payload_len % 8 or payload_len > 8 * MAX_SYNC_OIDS:
            raise ValueError(f"SYNC payload of {payload_len} bytes is not a list of oids")
    elif payload_len:
        raise ValueError(f"{op.name} takes no payload")
    if op == Op.FENCE and oid > MAX_VID:
        raise ValueError(f"volume id {oid} is not 24 bits")


def _check_reply(op: Op, status: Status, fields: tuple[int, int, int], payload_len: int) -> None:
    """Raise ValueError unless these header values make a valid reply."""
    used = _OK_FIELDS.get(op, 0) if status == Status.OK else _ERROR_FIELDS.get(status, 0)
    if any(fields[used:]):
        raise ValueError(f"{op.name}/{status.name} reply uses only {used} fields")
    if status != Status.OK:
        if payload_len > MAX_MESSAGE:
            raise ValueError(f"error message of {payload_len} bytes")
        if status == Status.BLOCK_ERROR and (
            fields[0] == Errno.OK or fields[0] not in Errno.__members__.values()
        ):
            raise ValueError(f"unknown errno {fields[0]}")
        return
    if op in (Op.STAT, Op.CHECKSUMS) and fields[1] > MAX_OBJECT_SIZE:
        raise ValueError(f"object length {fields[1]} is too large")
    if op in (Op.READ, Op.READ_OBJECT):
        limit = MAX_OBJECT_SIZE
    elif op == Op.CHECKSUMS:
        limit = 4 * ((fields[1] + SUB_BLOCK - 1) // SUB_BLOCK)
        if payload_len != limit:
            raise ValueError(f"CHECKSUMS of a {fields[1]}-byte object has {limit // 4} CRCs")
    elif op == Op.LIST:
        limit = MAX_LIST_BYTES
        if payload_len % 16:
            raise ValueError(f"LIST payload of {payload_len} bytes is not a list of pairs")
    else:
        limit = 0
    if payload_len > limit:
        raise ValueError(f"{op.name} reply payload of {payload_len} bytes is too large")


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One request; it validates itself, so an invalid request cannot exist."""

    op: Op
    request_id: int
    epoch: int
    oid: int = 0
    offset: int = 0
    length: int = 0
    version: int = 0
    token: int = 0
    flags: int = 0  # Flag bits
    payload: Buffer = b""

    def __post_init__(self) -> None:
        if not (
            0 <= self.request_id <= _U64
            and 0 <= self.epoch <= _U64
            and 0 <= self.oid <= _U64
            and 0 <= self.version <= _U64
            and 0 <= self.token <= _U64
        ):
            raise ValueError("request id, epoch, oid, version and token are u64")
        if not 0 <= self.offset <= MAX_OBJECT_SIZE or not 0 <= self.length <= MAX_OBJECT_SIZE:
            raise ValueError("offset or length is outside an object")
        values = (self.oid, self.offset, self.length, self.version, self.token)
        _check_request(self.op, self.flags, values, _nbytes(self.payload))


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """One reply: status OK with the op's results, or an error (see error_reply)."""

    op: Op
    request_id: int
    status: Status = Status.OK
    fields: tuple[int, int, int] = (0, 0, 0)
    payload: Buffer = b""

    def __post_init__(self) -> None:
        a, b, c = self.fields
        if not (0 <= self.request_id <= _U64 and 0 <= a <= _U64 and 0 <= b <= _U64):
            raise ValueError("request id and fields are u64")
        if not 0 <= c <= _U64:
            raise ValueError("request id and fields are u64")
        _check_reply(self.op, self.status, self.fields, _nbytes(self.payload))
        if self.status != Status.OK:
            try:
                bytes(self.payload).decode()
            except UnicodeDecodeError as exc:
                raise ValueError(f"error message is not UTF-8: {exc}") from None


def encode_request(request: Request) -> list[Buffer]:
    """The buffers to write, in order (header, then the payload unless empty)."""
    r = request
    size = _nbytes(r.payload)
    header = REQUEST_HEADER.pack(
        REQUEST_MAGIC, r.op, r.flags, 0, r.request_id, r.epoch, r.oid, r.offset, r.length,
        r.version, r.token, size,
    )  # fmt: skip
    return [header, r.payload] if size else [header]


def encode_reply(reply: Reply) -> list[Buffer]:
    """The buffers to write, in order (header, then the payload unless empty)."""
    size = _nbytes(reply.payload)
    header = REPLY_HEADER.pack(
        REPLY_MAGIC, reply.op, reply.status, 0, reply.request_id, *reply.fields, size
    )
    return [header, reply.payload] if size else [header]


# -- errors as replies ------------------------------------------------------------------


def _message(text: str) -> bytes:
    raw = text.encode()
    if len(raw) <= MAX_MESSAGE:
        return raw
    return raw[:MAX_MESSAGE].decode(errors="ignore").encode()


def error_reply(request: Request, exc: BaseException) -> Reply:
    """The reply that makes the client raise `exc` again (a non-BlockError becomes one)."""
    fields: tuple[int, int, int] = (0, 0, 0)
    payload = _message(str(exc))
    if isinstance(exc, ObjectNotFound):
        status, fields = Status.OBJECT_NOT_FOUND, (exc.oid, 0, 0)
    elif isinstance(exc, StaleVersion):
        status, fields = Status.STALE_VERSION, (exc.oid, exc.version, exc.current)
    elif isinstance(exc, ChecksumError):
        status, fields = Status.CHECKSUM, (exc.oid, 0, 0)
    elif isinstance(exc, WrongEpoch):
        status, fields = Status.WRONG_EPOCH, (exc.theirs, exc.ours, 0)
    elif isinstance(exc, Fenced):
        status, fields = Status.FENCED, (exc.vid, exc.token, exc.newest)
    elif isinstance(exc, NotAccepting):
        status = Status.NOT_ACCEPTING
    elif isinstance(exc, StoreClosed):
        status = Status.STORE_CLOSED
    elif isinstance(exc, PeerUnavailable):
        status = Status.PEER_UNAVAILABLE
        payload = _message(exc.peer + "\0" + str(exc))
    elif isinstance(exc, BlockError):
        status, fields = Status.BLOCK_ERROR, (int(exc.errno), 0, 0)
    elif isinstance(exc, ValueError):
        status, fields = Status.BLOCK_ERROR, (int(Errno.EINVAL), 0, 0)
    else:
        status, fields = Status.BLOCK_ERROR, (int(Errno.EIO), 0, 0)
        payload = _message(f"internal error: {type(exc).__name__}: {exc}")
    return Reply(request.op, request.request_id, status, fields, payload)


E = TypeVar("E", bound=BlockError)
M = TypeVar("M", Op, Status)


def _exactly(cls: type[E], errno: Errno, message: str) -> E:
    """An exception of type `cls` whose message is `message`, verbatim."""
    exc = cls.__new__(cls)
    BlockError.__init__(exc, errno, message)
    return exc


def reply_error(reply: Reply) -> BlockError:
    """The exception an error reply stands for (same type, fields and message)."""
    a, b, c = reply.fields
    message = bytes(reply.payload).decode()
    status = reply.status
    if status == Status.OBJECT_NOT_FOUND:
        return ObjectNotFound(a)
    if status == Status.STALE_VERSION:
        return StaleVersion(a, b, c)
    if status == Status.CHECKSUM:
        checksum = _exactly(ChecksumError, Errno.EIO, message)
        checksum.oid = a
        return checksum
    if status == Status.WRONG_EPOCH:
        return WrongEpoch(a, b)
    if status == Status.FENCED:
        return Fenced(a, b, c)
    if status == Status.NOT_ACCEPTING:
        return NotAccepting(message)
    if status == Status.STORE_CLOSED:
        return StoreClosed()
    if status == Status.PEER_UNAVAILABLE:
        peer, _, text = message.partition("\0")
        unavailable = _exactly(PeerUnavailable, Errno.EIO, text)
        unavailable.peer = peer
        return unavailable
    if status == Status.BLOCK_ERROR:
        return BlockError(Errno(a), message)
    raise ValueError(f"{status.name} is not an error")


# -- payloads ------------------------------------------------------------------------------


def _u_array(code: str, values: Iterable[int]) -> bytes:
    packed = array.array(code, values)
    if not _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def _u_list(code: str, payload: Buffer) -> list[int]:
    packed = array.array(code)
    packed.frombytes(payload)
    if not _BIG_ENDIAN:
        packed.byteswap()
    return packed.tolist()


def pack_oids(oids: Iterable[int]) -> bytes:
    return _u_array("Q", oids)


def unpack_oids(payload: Buffer) -> list[int]:
    return _u_list("Q", payload)


def pack_crcs(crcs: Iterable[int]) -> bytes:
    return _u_array("I", crcs)


def unpack_crcs(payload: Buffer) -> list[int]:
    return _u_list("I", payload)


def pack_versions(pairs: Iterable[tuple[int, int]]) -> bytes:
    return _u_array("Q", (n for pair in pairs for n in pair))


def unpack_versions(payload: Buffer) -> list[tuple[int, int]]:
    flat = _u_list("Q", payload)
    return list(zip(flat[::2], flat[1::2], strict=True))


# -- decoding --------------------------------------------------------------------------------


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
        _check_request(_member(_OPS, op, "op"), flags, (oid, offset, length, version, token), size)

    def _build(self, values: tuple[int, ...], payload: Buffer) -> Request:
        _, op, flags, _, rid, epoch, oid, offset, length, version, token, _ = values
        return Request(_OPS[op], rid, epoch, oid, offset, length, version, token, flags, payload)


class ReplyDecoder(_FrameReader[Reply]):
    """The client's side: bytes in, Replies out."""

    _header = REPLY_HEADER
    _magic = REPLY_MAGIC

    def _check_header(self, values: tuple[int, ...]) -> None:
        _, op, status, _, _, a, b, c, size = values
        _check_reply(_member(_OPS, op, "op"), _member(_STATUSES, status, "status"), (a, b, c), size)

    def _build(self, values: tuple[int, ...], payload: Buffer) -> Reply:
        _, op, status, _, rid, a, b, c, _ = values
        return Reply(_OPS[op], rid, _STATUSES[status], (a, b, c), payload)


def _member(members: dict[int, M], value: int, what: str) -> M:
    try:
        return members[value]
    except KeyError:
        raise ValueError(f"unknown {what} {value}") from None
