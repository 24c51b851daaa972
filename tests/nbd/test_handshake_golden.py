"""Golden bytes for the server handshake, fed whole and one byte at a time."""

from __future__ import annotations

import struct

import pytest

from ovis.nbd import Info, Option, RemoteProtocolError, ServerHandshake, TLSMode
from ovis.nbd import Reply as R
from ovis.nbd._handshake_server import Aborted, Ready

from .helpers import (
    DISK,
    catalog,
    info_request,
    name_and_queries,
    option,
    parse_option_replies,
    server_events,
)

GREETING = bytes.fromhex("4e42444d4147494349484156454f50540003")
CLIENT_FLAGS = struct.pack(">I", 3)


def feed(data: bytes, *, bytewise: bool, tls: TLSMode = TLSMode.OFF) -> tuple[bytes, list[object]]:
    server = ServerHandshake(catalog(), tls)
    out = server.data_to_send()
    events: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        server.receive_data(chunk)
        events += server_events(server)
        out += server.data_to_send()
    return out, events


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_greeting_offers_fixed_newstyle_and_no_zeroes() -> None:
    assert ServerHandshake(catalog()).data_to_send() == GREETING


def test_go_sends_info_export_then_ack(bytewise: bool) -> None:
    out, events = feed(CLIENT_FLAGS + option(Option.GO, info_request("disk")), bytewise=bytewise)
    assert out.startswith(GREETING)
    replies = parse_option_replies(out[len(GREETING) :])
    assert replies == [
        (Option.GO, R.INFO, struct.pack(">HQH", Info.EXPORT, DISK.size, DISK.flags & ~(1 << 7))),
        (Option.GO, R.ACK, b""),
    ]
    assert isinstance(events[-1], Ready) and events[-1].export.name == "disk"


def test_info_and_go_agree_and_block_size_is_sent_when_asked(bytewise: bool) -> None:
    ask = info_request("disk", [Info.BLOCK_SIZE, Info.NAME, Info.DESCRIPTION])
    out, events = feed(
        CLIENT_FLAGS + option(Option.INFO, ask) + option(Option.GO, ask), bytewise=bytewise
    )
    replies = parse_option_replies(out[len(GREETING) :])
    info, go = replies[: len(replies) // 2], replies[len(replies) // 2 :]
    assert [r[1:] for r in info] == [r[1:] for r in go]
    payloads = {struct.unpack_from(">H", r[2])[0]: r[2][2:] for r in go if r[1] == R.INFO}
    assert payloads[Info.BLOCK_SIZE] == struct.pack(">III", 1, 4096, 32 << 20)
    assert payloads[Info.NAME] == b"disk"
    assert payloads[Info.DESCRIPTION] == b"test disk"
    assert isinstance(events[-1], Ready)


def test_empty_name_is_the_default_export(bytewise: bool) -> None:
    _, events = feed(CLIENT_FLAGS + option(Option.GO, info_request("")), bytewise=bytewise)
    assert isinstance(events[-1], Ready) and events[-1].export.name == "disk"


def test_unknown_export_gets_err_unknown_and_negotiation_continues(bytewise: bool) -> None:
    data = CLIENT_FLAGS + option(Option.GO, info_request("nope")) + option(Option.ABORT)
    out, events = feed(data, bytewise=bytewise)
    kinds = [r[1] for r in parse_option_replies(out[len(GREETING) :])]
    assert kinds == [R.ERR_UNKNOWN, R.ACK]
    assert isinstance(events[-1], Aborted)


def test_unknown_option_payload_is_skipped_then_err_unsup(bytewise: bool) -> None:
    data = CLIENT_FLAGS + option(99, b"x" * 300) + option(Option.LIST)
    out, _ = feed(data, bytewise=bytewise)
    replies = parse_option_replies(out[len(GREETING) :])
    assert replies[0][:2] == (99, R.ERR_UNSUP)
    assert [r[1] for r in replies[1:]] == [R.SERVER, R.SERVER, R.ACK]
    assert replies[1][2] == struct.pack(">I", 4) + b"disk" + b"test disk"


def test_huge_option_is_discarded_without_buffering() -> None:
    server = ServerHandshake(catalog())
    server.receive_data(CLIENT_FLAGS + struct.pack(">QII", 0x49484156454F5054, 3, 10 << 20))
    server_events(server)
    for _ in range(10):
        server.receive_data(bytes(1 << 20))
        assert server.buffered == 0
    server.receive_data(option(Option.ABORT))
    assert isinstance(server_events(server)[-1], Aborted)
    kinds = [r[1] for r in parse_option_replies(server.data_to_send()[len(GREETING) :])]
    assert kinds == [R.ERR_TOO_BIG, R.ACK]


def test_options_with_unexpected_payloads_get_err_invalid(bytewise: bool) -> None:
    data = CLIENT_FLAGS + option(Option.LIST, b"x") + option(Option.STRUCTURED_REPLY, b"y")
    out, _ = feed(data, bytewise=bytewise)
    kinds = [r[1] for r in parse_option_replies(out[len(GREETING) :])]
    assert kinds == [R.ERR_INVALID, R.ERR_INVALID]


def test_malformed_info_request_gets_err_invalid(bytewise: bool) -> None:
    bad = struct.pack(">I", 100) + b"disk"  # name length runs past the end
    out, _ = feed(CLIENT_FLAGS + option(Option.GO, bad), bytewise=bytewise)
    assert parse_option_replies(out[len(GREETING) :])[0][1] == R.ERR_INVALID


def test_export_name_reply_pads_unless_no_zeroes() -> None:
    for flags, padding in ((1, 124), (3, 0)):
        out, events = feed(
            struct.pack(">I", flags) + option(Option.EXPORT_NAME, b"disk"), bytewise=False
        )
        body = out[len(GREETING) :]
        assert body[:10] == struct.pack(">QH", DISK.size, DISK.flags & ~(1 << 7))
        assert len(body) == 10 + padding
        assert isinstance(events[-1], Ready)


def test_unknown_client_flags_close_the_connection() -> None:
    server = ServerHandshake(catalog())
    server.receive_data(struct.pack(">I", 1 << 7))
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_export_name_for_unknown_export_closes() -> None:
    server = ServerHandshake(catalog())
    server.receive_data(CLIENT_FLAGS + option(Option.EXPORT_NAME, b"nope"))
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_meta_context_list_and_set(bytewise: bool) -> None:
    data = (
        CLIENT_FLAGS
        + option(Option.SET_META_CONTEXT, name_and_queries("disk", ["base:allocation"]))
        + option(Option.STRUCTURED_REPLY)
        + option(Option.LIST_META_CONTEXT, name_and_queries("disk", ["base:"]))
        + option(Option.SET_META_CONTEXT, name_and_queries("disk", ["base:allocation", "x:y"]))
        + option(Option.GO, info_request("disk"))
    )
    out, events = feed(data, bytewise=bytewise)
    replies = parse_option_replies(out[len(GREETING) :])
    assert [r[1] for r in replies[:6]] == [
        R.ERR_INVALID,  # SET before structured replies
        R.ACK,
        R.META_CONTEXT,
        R.ACK,
        R.META_CONTEXT,
        R.ACK,
    ]
    assert replies[4][2][4:] == b"base:allocation"
    ready = events[-1]
    assert isinstance(ready, Ready)
    assert ready.structured and list(ready.meta_contexts.values()) == ["base:allocation"]
    assert ready.export.flags & (1 << 7)  # SEND_DF with structured replies


def test_meta_context_for_another_export_is_dropped_at_go() -> None:
    data = (
        CLIENT_FLAGS
        + option(Option.STRUCTURED_REPLY)
        + option(Option.SET_META_CONTEXT, name_and_queries("other", ["base:allocation"]))
        + option(Option.GO, info_request("disk"))
    )
    _, events = feed(data, bytewise=False)
    assert isinstance(events[-1], Ready) and events[-1].meta_contexts == {}


def test_forced_tls_refuses_everything_but_starttls_and_abort() -> None:
    data = CLIENT_FLAGS + option(Option.LIST) + option(Option.GO, info_request("disk"))
    out, events = feed(data + option(Option.ABORT), bytewise=False, tls=TLSMode.REQUIRE)
    kinds = [r[1] for r in parse_option_replies(out[len(GREETING) :])]
    assert kinds == [R.ERR_TLS_REQD, R.ERR_TLS_REQD, R.ACK]
    assert isinstance(events[-1], Aborted)


def test_starttls_without_tls_configured_is_refused_not_tls_reqd() -> None:
    out, _ = feed(CLIENT_FLAGS + option(Option.STARTTLS), bytewise=False)
    assert parse_option_replies(out[len(GREETING) :])[0][1] == R.ERR_POLICY


def test_extended_headers_forbid_export_name() -> None:
    server = ServerHandshake(catalog())
    server.receive_data(
        CLIENT_FLAGS + option(Option.EXTENDED_HEADERS) + option(Option.EXPORT_NAME, b"disk")
    )
    with pytest.raises(RemoteProtocolError):
        server_events(server)
