"""Golden bytes for requests and replies, and a client/server pair with no sockets."""

from __future__ import annotations

import struct

import pytest

from ovis.nbd import (
    NEED_DATA,
    BlockStatusChunk,
    ClientTransmission,
    Command,
    DataChunk,
    DoneChunk,
    ErrorChunk,
    HoleChunk,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    ServerTransmission,
    SimpleReply,
)

WRITE = bytes.fromhex("25609513000100010000000000000007000000000000100000000004") + b"abcd"


def drain(machine: ServerTransmission | ClientTransmission) -> list[object]:
    events = []
    while (event := machine.next_event()) is not NEED_DATA:
        events.append(event)
    return events


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_write_request_parses(bytewise: bool) -> None:
    server = ServerTransmission(structured=False)
    events: list[object] = []
    for chunk in [WRITE[i : i + 1] for i in range(len(WRITE))] if bytewise else [WRITE]:
        server.receive_data(chunk)
        events += drain(server)
    assert events == [Request(Command.WRITE, 7, 4096, 4, 1, b"abcd")]


def test_pipelined_requests_in_one_segment() -> None:
    read = struct.pack(">IHHQQI", 0x25609513, 0, Command.READ, 8, 0, 512)
    server = ServerTransmission(structured=True)
    server.receive_data(WRITE + read + read[:10])
    assert [e.cookie for e in drain(server)] == [7, 8]  # type: ignore[attr-defined]


def test_simple_reply_golden() -> None:
    server = ServerTransmission(structured=False)
    server.receive_data(WRITE)
    drain(server)
    assert b"".join(server.send(SimpleReply(7, 5))) == bytes.fromhex(
        "67446698000000050000000000000007"
    )


def test_structured_chunks_golden() -> None:
    server = ServerTransmission(structured=True)
    server.receive_data(struct.pack(">IHHQQI", 0x25609513, 0, Command.READ, 9, 4096, 8))
    drain(server)
    data = b"".join(server.send(DataChunk(9, 4096, b"ab", done=False)))
    assert data == bytes.fromhex("668e33ef0000000100000000000000090000000a0000000000001000") + b"ab"
    hole = b"".join(server.send(HoleChunk(9, 4098, 6, done=True)))
    assert hole == bytes.fromhex("668e33ef0001000200000000000000090000000c000000000000100200000006")
    with pytest.raises(LocalProtocolError):  # the reply is complete: the cookie is gone
        server.send(DoneChunk(9))


def test_structured_reply_refused_when_not_negotiated() -> None:
    server = ServerTransmission(structured=False)
    server.receive_data(WRITE)
    drain(server)
    with pytest.raises(LocalProtocolError):
        server.send(ErrorChunk(7, 5))


def test_bad_magic_is_a_remote_error() -> None:
    server = ServerTransmission(structured=False)
    server.receive_data(b"\x00" * 28)
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_cookie_reuse_while_in_flight_is_a_remote_error() -> None:
    server = ServerTransmission(structured=False)
    server.receive_data(WRITE + WRITE)
    with pytest.raises(RemoteProtocolError):
        drain(server)


def test_oversized_write_is_skipped_unbuffered_and_flagged() -> None:
    server = ServerTransmission(structured=False, max_payload=1024)
    server.receive_data(struct.pack(">IHHQQI", 0x25609513, 0, Command.WRITE, 1, 0, 1 << 20))
    events = drain(server)
    for _ in range(16):
        server.receive_data(bytes(65536))
        assert server.buffered == 0
    server.receive_data(WRITE)
    events += drain(server)
    assert events[0] == Request(Command.WRITE, 1, 0, 1 << 20, 0, None, payload_dropped=True)
    assert events[1] == Request(Command.WRITE, 7, 4096, 4, 1, b"abcd")


def test_extended_headers_round_trip() -> None:
    client = ClientTransmission(structured=True, extended=True)
    server = ServerTransmission(structured=True, extended=True)
    big = 1 << 33
    server.receive_data(b"".join(client.send(Request(Command.BLOCK_STATUS, 3, 0, big))))
    (request,) = drain(server)
    assert request == Request(Command.BLOCK_STATUS, 3, 0, big)
    client.receive_data(b"".join(server.send(BlockStatusChunk(3, 1, ((big, 3),), done=True))))
    assert drain(client) == [BlockStatusChunk(3, 1, ((big, 3),), done=True)]


def test_client_decodes_interleaved_replies() -> None:
    client = ClientTransmission(structured=True)
    server = ServerTransmission(structured=True)
    for cookie in (1, 2):
        server.receive_data(b"".join(client.send(Request(Command.READ, cookie, 0, 4))))
    drain(server)
    wire = b"".join(
        b"".join(server.send(chunk))
        for chunk in (
            DataChunk(2, 0, b"zz", done=False),
            DataChunk(1, 0, b"abcd", done=True),
            ErrorChunk(2, 5, "boom", offset=2),
        )
    )
    for i in range(len(wire)):  # byte at a time
        client.receive_data(wire[i : i + 1])
    events = drain(client)
    assert events == [
        DataChunk(2, 0, b"zz", done=False),
        DataChunk(1, 0, b"abcd", done=True),
        ErrorChunk(2, 5, "boom", offset=2, done=True),
    ]


def test_client_rejects_chunk_outside_request() -> None:
    client = ClientTransmission(structured=True)
    server = ServerTransmission(structured=True)
    server.receive_data(b"".join(client.send(Request(Command.READ, 1, 100, 4))))
    drain(server)
    client.receive_data(b"".join(server.send(DataChunk(1, 0, b"abcd", done=True))))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_simple_read_reply_carries_data_only_on_success() -> None:
    client = ClientTransmission(structured=False)
    client.send(Request(Command.READ, 1, 0, 3))
    client.send(Request(Command.READ, 2, 0, 3))
    client.receive_data(bytes.fromhex("67446698000000000000000000000001") + b"xyz")
    client.receive_data(bytes.fromhex("67446698000000160000000000000002"))
    assert drain(client) == [SimpleReply(1, 0, b"xyz"), SimpleReply(2, 22)]


def test_events_validate_themselves() -> None:
    with pytest.raises(ValueError):
        SimpleReply(1, 5, b"data")
    with pytest.raises(ValueError):
        HoleChunk(1, 0, 0)
    with pytest.raises(ValueError):
        DoneChunk(1, done=False)
    with pytest.raises(ValueError):
        Request(Command.WRITE, 1, 0, 4, data=b"abc")


@pytest.mark.parametrize("buffered", [False, True], ids=["receive_data", "get_buffer"])
def test_large_write_payload_is_received_directly(buffered: bool) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB: above DIRECT_PAYLOAD
    wire = (
        struct.pack(">IHHQQI", 0x25609513, 0, Command.WRITE, 5, 0, len(payload)) + payload + WRITE
    )
    server = ServerTransmission(structured=False)
    events: list[object] = []
    pos, step = 0, 1
    while pos < len(wire):
        if buffered:
            buf = server.get_buffer()
            n = min(len(buf), step, len(wire) - pos)
            buf[:n] = wire[pos : pos + n]
            server.buffer_updated(n)
        else:
            n = min(step, len(wire) - pos)
            server.receive_data(wire[pos : pos + n])
        pos += n
        step = step * 3 % 70001 + 1
        events += drain(server)
    assert events == [
        Request(Command.WRITE, 5, 0, len(payload), 0, payload),
        Request(Command.WRITE, 7, 4096, 4, 1, b"abcd"),
    ]
