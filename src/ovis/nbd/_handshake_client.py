"""The client's side of the fixed-newstyle handshake, with no I/O.

The negotiation is a fixed script (STARTTLS, EXTENDED_HEADERS or
STRUCTURED_REPLY, SET_META_CONTEXT, then GO, LIST or INFO), written as a
generator that yields how many bytes it needs next, or an event for the shell.
`next_event` drives it from the receive buffer.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Generator, Sequence

from ._constants import (
    IHAVEOPT,
    NBDMAGIC,
    OLDSTYLE_MAGIC,
    OPTION_REPLY_MAGIC,
    ClientFlag,
    HandshakeFlag,
    Info,
    Option,
)
from ._constants import Reply as R
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import NEED_DATA, _NeedData
from ._handshake_server import StartTLS
from ._transmission import _Buffered

_REPLY_HEAD = struct.Struct(">QIII")
MAX_REPLY = 64 * 1024


class OptionRefused(ProtocolError):
    """The server answered an option with an error reply."""

    def __init__(self, option: int, reply: int, message: str) -> None:
        try:
            kind = R(reply).name
        except ValueError:
            kind = f"error {reply:#x}"
        super().__init__(f"{Option(option).name} refused: {kind} {message}".strip())
        self.option = option
        self.reply = reply


class Goal(enum.Enum):
    GO = "go"  # enter transmission
    INFO = "info"  # describe one export, then abort
    LIST = "list"  # list exports, then abort


@dataclasses.dataclass(frozen=True, slots=True)
class ExportDetails:
    name: str
    size: int
    flags: int
    description: str = ""
    min_block: int = 1
    preferred_block: int = 4096
    max_block: int = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Connected:
    """GO succeeded: transmission starts with these settings."""

    export: ExportDetails
    structured: bool
    extended: bool
    meta_contexts: dict[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Described:
    export: ExportDetails
    meta_contexts: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Listed:
    exports: tuple[tuple[str, str], ...]


Event = StartTLS | Connected | Described | Listed
_Step = Generator[int | Event, bytes | None, None]


class ClientHandshake(_Buffered):
    def __init__(
        self,
        export: str = "",
        *,
        goal: Goal = Goal.GO,
        tls: bool = False,
        structured: bool = True,
        extended: bool = False,
        meta_contexts: Sequence[str] = ("base:allocation",),
    ) -> None:
        super().__init__()
        self.export = export
        self.goal = goal
        self.tls = tls
        self.want_structured = structured or extended
        self.want_extended = extended
        self.want_contexts = tuple(meta_contexts)
        self._out = bytearray()
        self._script = self._run()
        self._want: int | Event | None = next(self._script)
        self._tls_pending = False

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_started(self) -> None:
        if not self._tls_pending:
            raise LocalProtocolError("tls_started() without StartTLS")
        self._tls_pending = False

    def next_event(self) -> Event | _NeedData:
        while True:
            if self._tls_pending:
                return NEED_DATA
            want = self._want
            if want is None:
                raise LocalProtocolError("the handshake is over")
            if not isinstance(want, int):
                self._advance(None)
                if isinstance(want, StartTLS):
                    self._tls_pending = True
                return want
            if self._available() < want:
                if self.closed:
                    raise RemoteProtocolError("server closed the connection during the handshake")
                return NEED_DATA
            self._advance(self._take(want))

    def _advance(self, value: bytes | None) -> None:
        try:
            self._want = self._script.send(value)
        except StopIteration:
            self._want = None

    def _option(self, option: Option, data: bytes = b"") -> None:
        self._out += struct.pack(">QII", IHAVEOPT, option, len(data)) + data

    def _reply(self, option: Option) -> Generator[int, bytes | None, tuple[int, bytes]]:
        head = yield _REPLY_HEAD.size
        assert head is not None
        magic, echoed, kind, length = _REPLY_HEAD.unpack(head)
        if magic != OPTION_REPLY_MAGIC or echoed != option:
            raise RemoteProtocolError(f"bad option reply to {option.name}")
        if length > MAX_REPLY:
            raise RemoteProtocolError("option reply too large")
        data = (yield length) if length else b""
        assert data is not None
        return kind, data

    def _run(self) -> _Step:
        greeting = yield 18
        assert greeting is not None
        magic, second, flags = struct.unpack(">QQH", greeting)
        if magic != NBDMAGIC:
            raise RemoteProtocolError("not an NBD server")
        if second == OLDSTYLE_MAGIC:
            raise RemoteProtocolError("server speaks oldstyle NBD, which is not supported")
        if second != IHAVEOPT or not flags & HandshakeFlag.FIXED_NEWSTYLE:
            raise RemoteProtocolError("server does not speak fixed newstyle")
        self._no_zeroes = bool(flags & HandshakeFlag.NO_ZEROES)
        self._out += struct.pack(
            ">I", ClientFlag.FIXED_NEWSTYLE | (ClientFlag.NO_ZEROES if self._no_zeroes else 0)
        )
        if self.tls:
            self._option(Option.STARTTLS)
            kind, data = yield from self._reply(Option.STARTTLS)
            if kind != R.ACK:
                raise OptionRefused(Option.STARTTLS, kind, data.decode(errors="replace"))
            yield StartTLS()
        if self.goal is Goal.LIST:
            yield (yield from self._list())
            return
        structured = extended = False
        if self.want_extended:
            self._option(Option.EXTENDED_HEADERS)
            kind, _ = yield from self._reply(Option.EXTENDED_HEADERS)
            structured = extended = kind == R.ACK
        if self.want_structured and not extended:
            self._option(Option.STRUCTURED_REPLY)
            kind, _ = yield from self._reply(Option.STRUCTURED_REPLY)
            structured = kind == R.ACK
        contexts: dict[str, int] = {}
        if structured and self.want_contexts:
            contexts = yield from self._set_meta_context(Option.SET_META_CONTEXT)
        details = yield from self._info_or_go(extended)
        if self.goal is Goal.INFO:
            self._option(Option.ABORT)
            yield Described(details, tuple(contexts))
            return
        yield Connected(details, structured, extended, contexts)

    def _list(self) -> Generator[int, bytes | None, Listed]:
        self._option(Option.LIST)
        exports = []
        while True:
            kind, data = yield from self._reply(Option.LIST)
            if kind == R.ACK:
                break
            if kind != R.SERVER:
                raise OptionRefused(Option.LIST, kind, data.decode(errors="replace"))
            (length,) = struct.unpack_from(">I", data)
            exports.append((data[4 : 4 + length].decode(), data[4 + length :].decode()))
        self._option(Option.ABORT)
        return Listed(tuple(exports))

    def _set_meta_context(self, option: Option) -> Generator[int, bytes | None, dict[str, int]]:
        name = self.export.encode()
        body = struct.pack(">I", len(name)) + name + struct.pack(">I", len(self.want_contexts))
        for query in self.want_contexts:
            raw = query.encode()
            body += struct.pack(">I", len(raw)) + raw
        self._option(option, body)
        contexts = {}
        while True:
            kind, data = yield from self._reply(option)
            if kind == R.META_CONTEXT:
                contexts[data[4:].decode()] = struct.unpack_from(">I", data)[0]
            elif kind == R.ACK:
                return contexts
            else:  # an error is final: the server selected nothing
                return {}

    def _info_or_go(self, extended: bool) -> Generator[int, bytes | None, ExportDetails]:
        option = Option.INFO if self.goal is Goal.INFO else Option.GO
        name = self.export.encode()
        wanted = (Info.BLOCK_SIZE, Info.NAME, Info.DESCRIPTION)
        body = (
            struct.pack(">I", len(name))
            + name
            + struct.pack(f">H{len(wanted)}H", len(wanted), *wanted)
        )
        self._option(option, body)
        info: dict[str, object] = {"name": self.export}
        while True:
            kind, data = yield from self._reply(option)
            if kind == R.ACK:
                break
            if kind == R.ERR_UNSUP and option == Option.GO and not extended:
                return (yield from self._export_name())
            if kind != R.INFO:
                raise OptionRefused(option, kind, data.decode(errors="replace"))
            _parse_info(data, info)
        if "size" not in info:
            raise RemoteProtocolError("server sent no INFO_EXPORT")
        return ExportDetails(**info)  # type: ignore[arg-type]

    def _export_name(self) -> Generator[int, bytes | None, ExportDetails]:
        self._option(Option.EXPORT_NAME, self.export.encode())
        raw = yield 10 if self._no_zeroes else 134
        assert raw is not None
        size, flags = struct.unpack_from(">QH", raw)
        return ExportDetails(self.export, size, flags)


def _parse_info(data: bytes, info: dict[str, object]) -> None:
    try:
        (kind,) = struct.unpack_from(">H", data)
        if kind == Info.EXPORT:
            info["size"], info["flags"] = struct.unpack_from(">QH", data, 2)
        elif kind == Info.NAME:
            info["name"] = data[2:].decode()
        elif kind == Info.DESCRIPTION:
            info["description"] = data[2:].decode()
        elif kind == Info.BLOCK_SIZE:
            info["min_block"], info["preferred_block"], info["max_block"] = struct.unpack_from(
                ">III", data, 2
            )
    except (struct.error, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"malformed INFO reply: {exc}") from exc
