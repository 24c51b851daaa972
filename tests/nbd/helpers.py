"""In-memory client/server pairs for the sans-IO state machines: no sockets."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ovis.nbd import (
    NEED_DATA,
    ClientHandshake,
    ExportInfo,
    Reply,
    ServerHandshake,
    TransmissionFlag,
)
from ovis.nbd._handshake_client import Event as ClientEvent
from ovis.nbd._handshake_server import Aborted, Ready, StartTLS

TF = TransmissionFlag
FLAGS = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_DF


class Catalog:
    def __init__(self, exports: Sequence[ExportInfo], default: str | None = None) -> None:
        self.exports = {e.name: e for e in exports}
        self.default = default

    def lookup(self, name: str) -> ExportInfo | Reply:
        if not name and self.default:
            name = self.default
        return self.exports.get(name, Reply.ERR_UNKNOWN)

    def listing(self) -> list[tuple[str, str]]:
        return [(e.name, e.description) for e in self.exports.values()]


DISK = ExportInfo("disk", 1 << 20, FLAGS, "test disk")


def catalog() -> Catalog:
    return Catalog([DISK, ExportInfo("other", 4096, TF.HAS_FLAGS | TF.READ_ONLY)], "disk")


def option(code: int, data: bytes = b"") -> bytes:
    return struct.pack(">QII", 0x49484156454F5054, code, len(data)) + data


def name_and_queries(name: str, queries: Sequence[str]) -> bytes:
    body = struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(queries))
    for q in queries:
        body += struct.pack(">I", len(q)) + q.encode()
    return body


def info_request(name: str, infos: Sequence[int] = ()) -> bytes:
    raw = name.encode()
    return struct.pack(">I", len(raw)) + raw + struct.pack(f">H{len(infos)}H", len(infos), *infos)


def parse_option_replies(data: bytes) -> list[tuple[int, int, bytes]]:
    """(option, reply type, payload) of each option reply in `data`."""
    replies, pos = [], 0
    while pos < len(data):
        magic, opt, kind, length = struct.unpack_from(">QIII", data, pos)
        assert magic == 0x0003E889045565A9
        replies.append((opt, kind, data[pos + 20 : pos + 20 + length]))
        pos += 20 + length
    return replies


def server_events(server: ServerHandshake) -> list[object]:
    events: list[object] = []
    while True:
        event = server.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, Ready | Aborted | StartTLS):
            return events


def run_pair(client: ClientHandshake, server: ServerHandshake) -> tuple[ClientEvent, object]:
    """Shuttle bytes between the two until the client has its final event."""
    server_final: object = None
    for _ in range(100):
        out = server.data_to_send()
        if out:  # b"" would mean "peer closed"
            client.receive_data(out)
        event = client.next_event()
        sent = client.data_to_send()
        if sent:
            server.receive_data(sent)
        for ev in server_events(server):
            server_final = ev
        if not isinstance(event, type(NEED_DATA)):
            if isinstance(event, StartTLS):
                raise AssertionError("no TLS in the in-memory pair")
            return event, server_final
    raise AssertionError("handshake did not finish")
