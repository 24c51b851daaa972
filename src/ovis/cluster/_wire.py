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
same fields (`_wire_errors`: `error_reply` / `reply_error`).

Every frame is bounded before its payload is buffered: data payloads by
MAX_OBJECT_SIZE, a LIST reply by MAX_LIST_BYTES (16 bytes per object: 16 Mi
objects), SYNC by MAX_SYNC_OIDS.  Bytes that are not a valid frame raise
PeerProtocolError; the connection must then be closed.  Payloads of at least
DIRECT_PAYLOAD bytes are received straight into a buffer of their own
(`_wire_decode`, through `get_buffer`/`buffer_updated`, as asyncio.BufferedProtocol
calls them).
"""

from __future__ import annotations

import array
import dataclasses
import enum
import struct
import sys
from collections.abc import Iterable

from ovis.block._device import Buffer
from ovis.nbd._constants import Errno
from ovis.store import MAX_OBJECT_SIZE
from ovis.store._format import SUB_BLOCK

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
OPS = {int(op): op for op in Op}
STATUSES = {int(status): status for status in Status}
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


def check_request(
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


def check_reply(op: Op, status: Status, fields: tuple[int, int, int], payload_len: int) -> None:
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
        check_request(self.op, self.flags, values, _nbytes(self.payload))


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
        check_reply(self.op, self.status, self.fields, _nbytes(self.payload))
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
