"""The server's side of the fixed-newstyle handshake, with no I/O.

Feed client bytes with `receive_data`, collect replies with `data_to_send`,
and call `next_event` until it returns `NEED_DATA`.  Most options are answered
by the state machine itself from the `ExportCatalog` it is given; it only
surfaces what the I/O shell must act on:

- `StartTLS`: send the pending ACK, wrap the socket in TLS, then call
  `tls_started()`.
- `Aborted`: send what is pending, then close.
- `Ready`: send what is pending; the transmission phase starts with the
  negotiated settings it carries.
- `Lookup`: only with a `Refreshable` catalog (a cluster's, which learns of
  new volumes from a watch): a client asked for a name it does not know.
  Await `catalog.refresh()`, then call `next_event` again; the option is
  answered from the refreshed catalog.  Once per name and connection.

A client that breaks the rules gets `RemoteProtocolError` (close the socket).
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from ._catalog import ExportCatalog, ExportInfo, Refreshable, refusal
from ._constants import (
    IHAVEOPT,
    MAX_OPTION_LENGTH,
    MAX_STRING,
    NBDMAGIC,
    OPTION_REPLY_MAGIC,
    ClientFlag,
    HandshakeFlag,
    Info,
    Option,
)
from ._constants import (
    Reply as R,
)
from ._constants import (
    TransmissionFlag as TF,
)
from ._errors import RemoteProtocolError
from ._events import NEED_DATA, _NeedData
from ._transmission import _Buffered

_OPTION_HEAD = struct.Struct(">QII")
_REPLY_HEAD = struct.Struct(">QIII")
MAX_OPTIONS = 1024  # a client haggling longer than this is not a real client


class TLSMode(enum.Enum):
    OFF = "off"  # STARTTLS refused
    ALLOW = "allow"  # SELECTIVETLS with every export reachable either way
    REQUIRE = "require"  # FORCEDTLS


@dataclasses.dataclass(frozen=True, slots=True)
class StartTLS:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Aborted:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Lookup:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """Negotiation finished: serve `export` with these settings."""

    export: ExportInfo
    structured: bool
    extended: bool
    meta_contexts: dict[int, str]
    tls: bool


class _State(enum.Enum):
    CLIENT_FLAGS = 1
    OPTIONS = 2
    TLS = 3
    DONE = 4


class ServerHandshake(_Buffered):
    def __init__(self, catalog: ExportCatalog, tls: TLSMode = TLSMode.OFF) -> None:
        super().__init__()
        self.catalog = catalog
        self.tls_mode = tls
        self.tls_active = False
        self._out = bytearray(
            struct.pack(
                ">QQH", NBDMAGIC, IHAVEOPT, HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES
            )
        )
        self._state = _State.CLIENT_FLAGS
        self._no_zeroes = False
        self._options = 0
        self._refreshed: set[str] = set()  # names a Lookup was already emitted for
        self._reset_negotiation()

    def _reset_negotiation(self) -> None:
        self.structured = False
        self.extended = False
        self._contexts: dict[int, str] = {}
        self._contexts_for: str | None = None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_started(self) -> None:
        """The shell finished the TLS handshake; negotiation starts over inside TLS."""
        if self._state is not _State.TLS:
            raise RemoteProtocolError("TLS started at the wrong time")
        self.tls_active = True
        self._reset_negotiation()
        self._state = _State.OPTIONS

    def next_event(self) -> StartTLS | Aborted | Ready | Lookup | _NeedData:
        while True:
            if self._state is _State.CLIENT_FLAGS:
                if self._available() < 4:
                    return NEED_DATA
                (flags,) = struct.unpack(">I", self._take(4))
                # int(): an IntFlag's ~ drops the unknown bits we are looking for.
                if flags & ~int(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES):
                    raise RemoteProtocolError(f"unknown client flags {flags:#x}")
                if not flags & ClientFlag.FIXED_NEWSTYLE:
                    raise RemoteProtocolError("client does not speak fixed newstyle")
                self._no_zeroes = bool(flags & ClientFlag.NO_ZEROES)
                self._state = _State.OPTIONS
            elif self._state is _State.OPTIONS:
                event = self._next_option()
                if event is not None:
                    return event
            elif self._state is _State.TLS:
                if self._available():
                    raise RemoteProtocolError("data sent before the TLS handshake")
                return NEED_DATA
            else:
                return NEED_DATA

    def trailing_data(self) -> bytes:
        """Bytes that arrived after the handshake ended: they belong to transmission."""
        return self._take(self._available())

    def _next_option(self) -> StartTLS | Aborted | Ready | Lookup | _NeedData | None:
        if self._available() < _OPTION_HEAD.size:
            return NEED_DATA
        magic, option, length = _OPTION_HEAD.unpack_from(self._buf, self._pos)
        if magic != IHAVEOPT:
            raise RemoteProtocolError(f"bad option magic {magic:#x}")
        if length > MAX_OPTION_LENGTH:
            self._take(_OPTION_HEAD.size)
            self._discard(length)
            self._reply(option, R.ERR_TOO_BIG, b"option payload too large")
            return None
        if self._available() < _OPTION_HEAD.size + length:
            return NEED_DATA
        if (lookup := self._unknown_name(option, length)) is not None:
            return lookup  # the option stays buffered until the catalog is refreshed
        self._take(_OPTION_HEAD.size)
        data = self._take(length)
        self._options += 1
        if self._options > MAX_OPTIONS:
            raise RemoteProtocolError("too many options")
        return self._handle(option, data)

    def _unknown_name(self, option: int, length: int) -> Lookup | None:
        """A Lookup if this option names an export a Refreshable catalog does not know."""
        if option not in (Option.INFO, Option.GO, Option.EXPORT_NAME):
            return None
        if not isinstance(self.catalog, Refreshable) or (
            self.tls_mode is TLSMode.REQUIRE and not self.tls_active
        ):
            return None
        start = self._pos + _OPTION_HEAD.size
        data = bytes(self._buf[start : start + length])
        try:
            name = _decode_name(data) if option == Option.EXPORT_NAME else _split_name(data)[0]
        except (ValueError, struct.error):
            return None  # answered as malformed when the option is handled
        if name in self._refreshed or self.catalog.lookup(name) != R.ERR_UNKNOWN:
            return None
        self._refreshed.add(name)
        return Lookup(name)

    def _reply(self, option: int, kind: R, data: bytes = b"") -> None:
        self._out += _REPLY_HEAD.pack(OPTION_REPLY_MAGIC, option, kind, len(data))
        self._out += data

    def _handle(self, option: int, data: bytes) -> StartTLS | Aborted | Ready | None:
        if option == Option.ABORT:
            self._reply(option, R.ACK)
            self._state = _State.DONE
            return Aborted()
        must_tls = self.tls_mode is TLSMode.REQUIRE and not self.tls_active
        if option == Option.EXPORT_NAME:
            return self._export_name(data, must_tls)
        if option == Option.STARTTLS:
            return self._starttls(option, data)
        if must_tls:
            self._reply(option, R.ERR_TLS_REQD, b"TLS is required")
        elif option == Option.LIST:
            self._list(option, data)
        elif option in (Option.INFO, Option.GO):
            return self._info_or_go(option, data)
        elif option == Option.STRUCTURED_REPLY:
            if data:
                self._reply(option, R.ERR_INVALID, b"STRUCTURED_REPLY takes no data")
            else:
                self.structured = True
                self._reply(option, R.ACK)
        elif option == Option.EXTENDED_HEADERS:
            if data:
                self._reply(option, R.ERR_INVALID, b"EXTENDED_HEADERS takes no data")
            else:
                self.structured = self.extended = True
                self._reply(option, R.ACK)
        elif option in (Option.LIST_META_CONTEXT, Option.SET_META_CONTEXT):
            self._meta_context(option, data)
        else:
            self._reply(option, R.ERR_UNSUP, b"unsupported option")
        return None

    def _starttls(self, option: int, data: bytes) -> StartTLS | None:
        if data:
            self._reply(option, R.ERR_INVALID, b"STARTTLS takes no data")
        elif self.tls_mode is TLSMode.OFF:
            self._reply(option, R.ERR_POLICY, b"TLS is not configured")
        elif self.tls_active:
            self._reply(option, R.ERR_INVALID, b"TLS is already active")
        else:
            self._reply(option, R.ACK)
            self._state = _State.TLS
            return StartTLS()
        return None

    def _export_name(self, data: bytes, must_tls: bool) -> Ready:
        # EXPORT_NAME has no error reply: every refusal is a disconnect.
        if must_tls:
            raise RemoteProtocolError("EXPORT_NAME without TLS on a TLS-only server")
        if self.extended:
            raise RemoteProtocolError("EXPORT_NAME after EXTENDED_HEADERS")
        try:
            name = _decode_name(data)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        export = self.catalog.lookup(name)
        if not isinstance(export, ExportInfo):
            kind, why = refusal(name, export)
            raise RemoteProtocolError(f"export {name!r} refused ({kind.name}: {why.decode()})")
        # Without structured replies DF must stay clear.
        flags = self._flags_for(export)
        self._out += struct.pack(">QH", export.size, flags)
        if not self._no_zeroes:
            self._out += bytes(124)
        return self._ready(export)

    def _flags_for(self, export: ExportInfo) -> int:
        flags = export.flags | TF.HAS_FLAGS
        if not self.structured:
            flags &= ~TF.SEND_DF
        return int(flags)

    def _ready(self, export: ExportInfo) -> Ready:
        self._state = _State.DONE
        contexts = self._contexts if self._contexts_for == export.name else {}
        return Ready(export, self.structured, self.extended, dict(contexts), self.tls_active)

    def _list(self, option: int, data: bytes) -> None:
        if data:
            self._reply(option, R.ERR_INVALID, b"LIST takes no data")
            return
        for name, description in self.catalog.listing():
            raw = name.encode()
            self._reply(option, R.SERVER, struct.pack(">I", len(raw)) + raw + description.encode())
        self._reply(option, R.ACK)

    def _info_or_go(self, option: int, data: bytes) -> Ready | None:
        try:
            name, rest = _split_name(data)
            (count,) = struct.unpack_from(">H", rest)
            if len(rest) != 2 + 2 * count:
                raise ValueError("info request count does not match its length")
            requests = struct.unpack_from(f">{count}H", rest, 2)
        except (ValueError, struct.error) as exc:
            self._reply(option, R.ERR_INVALID, str(exc).encode())
            return None
        export = self.catalog.lookup(name)
        if not isinstance(export, ExportInfo):
            self._reply(option, *refusal(name, export))
            return None
        self._reply(
            option, R.INFO, struct.pack(">HQH", Info.EXPORT, export.size, self._flags_for(export))
        )
        if Info.NAME in requests:
            self._reply(option, R.INFO, struct.pack(">H", Info.NAME) + export.name.encode())
        if Info.DESCRIPTION in requests and export.description:
            self._reply(
                option, R.INFO, struct.pack(">H", Info.DESCRIPTION) + export.description.encode()
            )
        if Info.BLOCK_SIZE in requests:
            sizes = struct.pack(
                ">HIII", Info.BLOCK_SIZE, export.min_block, export.preferred_block, export.max_block
            )
            self._reply(option, R.INFO, sizes)
        self._reply(option, R.ACK)
        return self._ready(export) if option == Option.GO else None

    def _meta_context(self, option: int, data: bytes) -> None:
        setting = option == Option.SET_META_CONTEXT
        if setting:
            self._contexts = {}
            self._contexts_for = None
        if setting and not self.structured:
            self._reply(option, R.ERR_INVALID, b"negotiate structured replies first")
            return
        try:
            name, rest = _split_name(data)
            queries = _parse_queries(rest)
        except (ValueError, struct.error) as exc:
            self._reply(option, R.ERR_INVALID, str(exc).encode())
            return
        export = self.catalog.lookup(name)
        if not isinstance(export, ExportInfo):
            self._reply(option, *refusal(name, export))
            return
        matches = [c for c in export.meta_contexts if _matches(c, queries, listing=not setting)]
        for number, context in enumerate(matches, start=1):
            context_id = number if setting else 0
            self._reply(option, R.META_CONTEXT, struct.pack(">I", context_id) + context.encode())
            if setting:
                self._contexts[context_id] = context
        if setting:  # the resolved name: "" selects the default export's contexts
            self._contexts_for = export.name
        self._reply(option, R.ACK)


def _decode_name(raw: bytes) -> str:
    if len(raw) > MAX_STRING:
        raise ValueError("name longer than 4096 bytes")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("name is not UTF-8") from exc
    if "\0" in name:
        raise ValueError("name contains NUL")
    return name


def _split_name(data: bytes) -> tuple[str, bytes]:
    (length,) = struct.unpack_from(">I", data)
    if 4 + length > len(data):
        raise ValueError("name runs past the end of the option")
    return _decode_name(data[4 : 4 + length]), data[4 + length :]


def _parse_queries(data: bytes) -> list[str]:
    (count,) = struct.unpack_from(">I", data)
    queries, pos = [], 4
    for _ in range(count):
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + length > len(data):
            raise ValueError("query runs past the end of the option")
        queries.append(_decode_name(data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    if pos != len(data):
        raise ValueError("trailing bytes after the queries")
    return queries


def _matches(context: str, queries: list[str], *, listing: bool) -> bool:
    if not queries:
        return listing  # LIST with no query lists all; SET with none selects nothing
    namespace = context.split(":", 1)[0] + ":"
    return any(q == context or (listing and q == namespace) for q in queries)
