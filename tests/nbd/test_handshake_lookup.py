"""A catalog that lags behind (a cluster node's) is refreshed before an unknown name is
refused: the handshake emits Lookup, keeps the option, and answers it afterwards."""

from __future__ import annotations

import asyncio
import struct

from ovis.nbd import NEED_DATA, ExportInfo, Option, ServerHandshake
from ovis.nbd import Reply as R
from ovis.nbd._handshake_server import Lookup, Ready

from .helpers import DISK, FLAGS, Catalog, info_request, option, parse_option_replies

CLIENT_FLAGS = struct.pack(">I", 3)
LATE = ExportInfo("late", 4096, FLAGS)


class LaggingCatalog(Catalog):
    """Learns of "late" only when refreshed."""

    def __init__(self) -> None:
        super().__init__([DISK])
        self.refreshes = 0

    async def refresh(self) -> None:
        self.refreshes += 1
        self.exports["late"] = LATE


def start(catalog: Catalog, *options: bytes) -> ServerHandshake:
    server = ServerHandshake(catalog)
    server.data_to_send()
    server.receive_data(CLIENT_FLAGS + b"".join(options))
    return server


def test_go_for_a_name_not_known_yet_waits_for_the_refresh_then_succeeds() -> None:
    catalog = LaggingCatalog()
    server = start(catalog, option(Option.GO, info_request("late")))
    assert server.next_event() == Lookup("late")
    assert server.data_to_send() == b"", "nothing may be answered before the refresh"
    asyncio.run(catalog.refresh())
    event = server.next_event()
    assert isinstance(event, Ready) and event.export.name == "late"
    kinds = [kind for _, kind, _ in parse_option_replies(server.data_to_send())]
    assert kinds == [R.INFO, R.ACK]


def test_export_name_is_looked_up_too() -> None:
    catalog = LaggingCatalog()
    server = start(catalog, option(Option.EXPORT_NAME, b"late"))
    assert server.next_event() == Lookup("late")
    asyncio.run(catalog.refresh())
    event = server.next_event()
    assert isinstance(event, Ready) and event.export.name == "late"


def test_a_name_still_unknown_is_refused_and_not_looked_up_twice() -> None:
    catalog = LaggingCatalog()
    go = option(Option.GO, info_request("nope"))
    server = start(catalog, go)
    assert server.next_event() == Lookup("nope")
    asyncio.run(catalog.refresh())
    assert server.next_event() is NEED_DATA
    server.receive_data(go)  # asked again on the same connection: refused at once
    assert server.next_event() is NEED_DATA
    kinds = [kind for _, kind, _ in parse_option_replies(server.data_to_send())]
    assert kinds == [R.ERR_UNKNOWN, R.ERR_UNKNOWN]
    assert catalog.refreshes == 1


def test_a_known_name_needs_no_lookup() -> None:
    server = start(LaggingCatalog(), option(Option.GO, info_request("disk")))
    event = server.next_event()
    assert isinstance(event, Ready) and event.export.name == "disk"
