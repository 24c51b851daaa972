"""Hypothesis: any input leaves each machine in a legal state or raises ProtocolError."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from ovis.nbd import (
    ClientHandshake,
    ClientTransmission,
    Command,
    Option,
    ProtocolError,
    Request,
    ServerHandshake,
    ServerTransmission,
    TLSMode,
)
from ovis.nbd._handshake_server import Aborted, Ready, StartTLS

from .helpers import catalog, info_request, option, run_pair, server_events

options = st.builds(
    option,
    st.sampled_from([*Option, 0, 42, 0xFFFF_FFFF]),
    st.binary(max_size=64) | st.builds(info_request, st.sampled_from(["disk", "", "x"])),
)
option_streams = st.lists(options, max_size=8).map(b"".join)
chunking = st.lists(st.integers(1, 64), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(option_streams, st.binary(max_size=32), chunking, st.sampled_from(list(TLSMode)))
def test_server_handshake_never_crashes(
    stream: bytes, noise: bytes, sizes: list[int], tls: TLSMode
) -> None:
    server = ServerHandshake(catalog(), tls)
    data = struct.pack(">I", 3) + stream + noise
    pos = 0
    try:
        for size in sizes * 10:
            if pos >= len(data):
                break
            server.receive_data(data[pos : pos + size])
            pos += size
            for event in server_events(server):
                assert isinstance(event, Ready | Aborted | StartTLS)
                return
            server.data_to_send()
    except ProtocolError:
        pass


request_headers = st.builds(
    lambda flags, cmd, cookie, off, length, payload: (
        struct.pack(">IHHQQI", 0x25609513, flags, cmd, cookie, off, length) + payload
    ),
    st.integers(0, 0xFFFF),
    st.sampled_from([*Command, 99]),
    st.integers(0, 3),
    st.integers(0, 2**64 - 1),
    st.integers(0, 64),
    st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(request_headers, max_size=6).map(b"".join), st.binary(max_size=40), chunking)
def test_server_transmission_never_crashes(stream: bytes, noise: bytes, sizes: list[int]) -> None:
    server = ServerTransmission(structured=True, max_payload=32)
    data = stream + noise
    pos = 0
    try:
        for size in sizes * 10:
            server.receive_data(data[pos : pos + size])
            pos += size
            while isinstance(event := server.next_event(), Request):
                assert event.data is None or len(event.data) == event.length <= 32
            if pos >= len(data):
                break
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_client_transmission_never_crashes(noise: bytes) -> None:
    client = ClientTransmission(structured=True)
    client.send(Request(Command.READ, 0, 0, 16))
    client.send(Request(Command.BLOCK_STATUS, 1, 0, 16))
    client.receive_data(noise)
    try:
        for _ in range(10):
            client.next_event()
    except ProtocolError:
        pass


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["disk", "", "other"]), st.booleans(), st.booleans())
def test_client_and_server_agree(name: str, structured: bool, extended: bool) -> None:
    client = ClientHandshake(name, structured=structured, extended=extended)
    event, ready = run_pair(client, ServerHandshake(catalog()))
    assert isinstance(ready, Ready)
    assert event.export.size == ready.export.size  # type: ignore[union-attr]
    assert event.structured == ready.structured == (structured or extended)  # type: ignore[union-attr]
    assert event.extended == ready.extended == extended  # type: ignore[union-attr]
