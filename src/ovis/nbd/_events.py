"""Events of the transmission phase: frozen, slotted, and valid by construction.

The server receives `Request`s and sends replies; the client does the
reverse.  A reply is either a `SimpleReply` or a series of structured chunks
whose last one has `done=True`.
"""

from __future__ import annotations

import dataclasses
from typing import TypeAlias

from ._constants import MAX_STRING, Errno

Buffer: TypeAlias = bytes | bytearray | memoryview

U16 = 0xFFFF
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF


def _check_range(name: str, value: int, limit: int) -> None:
    if not 0 <= value <= limit:
        raise ValueError(f"{name}={value} is outside 0..{limit}")


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One transmission request.

    `data` is the WRITE payload.  `payload_dropped` is set by the server's
    parser when the payload was larger than it accepts and was discarded
    unread: such a request must be answered with an error.
    """

    command: int
    cookie: int
    offset: int = 0
    length: int = 0
    flags: int = 0
    data: Buffer | None = None
    payload_dropped: bool = False

    def __post_init__(self) -> None:
        if not (  # one test on the server's per-request path; which one failed only if one did
            0 <= self.command <= U16
            and 0 <= self.flags <= U16
            and 0 <= self.cookie <= U64
            and 0 <= self.offset <= U64
            and 0 <= self.length <= U64
        ):
            _check_range("command", self.command, U16)
            _check_range("flags", self.flags, U16)
            _check_range("cookie", self.cookie, U64)
            _check_range("offset", self.offset, U64)
            _check_range("length", self.length, U64)
        if self.data is not None and len(self.data) != self.length:
            raise ValueError("payload length must equal the request length")


@dataclasses.dataclass(frozen=True, slots=True)
class SimpleReply:
    """A simple reply; `data` only for a successful READ."""

    cookie: int
    error: int = 0
    data: Buffer | None = None

    def __post_init__(self) -> None:
        _check_range("cookie", self.cookie, U64)
        _check_range("error", self.error, U32)
        if self.error and self.data is not None:
            raise ValueError("an error reply carries no data")


@dataclasses.dataclass(frozen=True, slots=True)
class DataChunk:
    """OFFSET_DATA: `data` read at absolute `offset`."""

    cookie: int
    offset: int
    data: Buffer
    done: bool = False

    def __post_init__(self) -> None:
        _check_range("offset", self.offset, U64)
        if not len(self.data):
            raise ValueError("a data chunk carries at least one byte")


@dataclasses.dataclass(frozen=True, slots=True)
class HoleChunk:
    """OFFSET_HOLE: `length` bytes of zeros at absolute `offset`."""

    cookie: int
    offset: int
    length: int
    done: bool = False

    def __post_init__(self) -> None:
        _check_range("offset", self.offset, U64)
        if not 0 < self.length <= U32:
            raise ValueError("a hole chunk covers 1..2**32-1 bytes")


@dataclasses.dataclass(frozen=True, slots=True)
class BlockStatusChunk:
    """BLOCK_STATUS for one meta context: (length, flags) extents."""

    cookie: int
    context_id: int
    extents: tuple[tuple[int, int], ...]
    done: bool = False

    def __post_init__(self) -> None:
        _check_range("context_id", self.context_id, U32)
        if not self.extents:
            raise ValueError("block status needs at least one extent")
        for length, flags in self.extents:
            if length <= 0:
                raise ValueError("extent lengths are positive")
            _check_range("extent length", length, U64)
            _check_range("extent flags", flags, U64)


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorChunk:
    """ERROR (or ERROR_OFFSET when `offset` is given); always ends the reply here."""

    cookie: int
    error: int
    message: str = ""
    offset: int | None = None
    done: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.error <= U32:
            raise ValueError("an error chunk carries a non-zero error")
        if len(self.message.encode()) > MAX_STRING:
            raise ValueError("error message too long")


@dataclasses.dataclass(frozen=True, slots=True)
class DoneChunk:
    """NONE: ends a structured reply that has nothing more to say."""

    cookie: int
    done: bool = True

    def __post_init__(self) -> None:
        if not self.done:
            raise ValueError("a NONE chunk must carry DONE")


Chunk: TypeAlias = DataChunk | HoleChunk | BlockStatusChunk | ErrorChunk | DoneChunk
Reply: TypeAlias = SimpleReply | Chunk


def error_of(reply: Reply) -> Errno | int:
    """The error a reply carries, 0 if none."""
    if isinstance(reply, SimpleReply | ErrorChunk):
        try:
            return Errno(reply.error)
        except ValueError:
            return reply.error
    return 0


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""Returned by next_event() when more bytes must arrive first."""
