"""The peer protocol's frames: golden bytes, bounds, and errors that round-trip."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovis.block._device import BlockError
from ovis.cluster._model import Fenced, NotAccepting, PeerUnavailable, WrongEpoch
from ovis.cluster._wire import (
    Flag,
    Op,
    PeerProtocolError,
    Reply,
    Request,
    Status,
    encode_reply,
    encode_request,
    pack_crcs,
    pack_oids,
    pack_versions,
    unpack_crcs,
    unpack_oids,
    unpack_versions,
)
from ovis.cluster._wire_decode import NEED_DATA, ReplyDecoder, RequestDecoder
from ovis.cluster._wire_errors import error_reply, reply_error
from ovis.nbd._constants import Errno
from ovis.store import ChecksumError, ObjectNotFound, StaleVersion, StoreClosed

WRITE = Request(
    Op.WRITE, 7, 3, oid=0x1_0000_0007, offset=4096, version=9, token=42, payload=b"abcd"
)
WRITE_BYTES = bytes.fromhex(
    "4f565251 05 00 0000"  # magic "OVRQ", op WRITE, flags, reserved
    "0000000000000007"  # request id
    "0000000000000003"  # epoch
    "0000000100000007"  # oid
    "00001000 00000000"  # offset, length
    "0000000000000009"  # version
    "000000000000002a"  # token
    "00000004"  # payload length
    "61626364"  # payload
)
READ_RAW = Request(Op.READ, 8, 3, oid=5, offset=1, length=2, flags=Flag.RAW)
READ_RAW_BYTES = bytes.fromhex(
    "4f565251 01 01 0000 0000000000000008 0000000000000003 0000000000000005"
    "00000001 00000002 0000000000000000 0000000000000000 00000000"
)
STAT_REPLY = Reply(Op.STAT, 7, fields=(9, 4096, 0))
STAT_REPLY_BYTES = bytes.fromhex(
    "4f565250 03 00 0000"  # magic "OVRP", op STAT, status OK, reserved
    "0000000000000007"  # request id
    "0000000000000009 0000000000001000 0000000000000000"  # version, length, unused
    "00000000"  # payload length
)
FENCED_REPLY = Reply(Op.WRITE, 9, Status.FENCED, (1, 2, 3), b"gone")
FENCED_REPLY_BYTES = bytes.fromhex(
    "4f565250 05 05 0000 0000000000000009"
    "0000000000000001 0000000000000002 0000000000000003 00000004 676f6e65"
)


def decode_all(decoder: RequestDecoder | ReplyDecoder, data: bytes) -> list[object]:
    decoder.receive_data(data)
    frames = []
    while (event := decoder.next_event()) is not NEED_DATA:
        frames.append(event)
    return frames


def decode_bytewise(decoder: RequestDecoder | ReplyDecoder, data: bytes) -> list[object]:
    frames = []
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        while (event := decoder.next_event()) is not NEED_DATA:
            frames.append(event)
    return frames


def same(a: object, b: object) -> bool:
    """Frames are equal once their payloads are compared as bytes."""
    assert isinstance(a, Request | Reply) and isinstance(b, Request | Reply)
    return type(a) is type(b) and all(
        (bytes(x) if k == "payload" else x) == (bytes(y) if k == "payload" else y)  # type: ignore[arg-type]
        for k, x, y in ((k, getattr(a, k), getattr(b, k)) for k in a.__slots__)
    )


@pytest.mark.parametrize(
    ("frame", "golden"), [(WRITE, WRITE_BYTES), (READ_RAW, READ_RAW_BYTES)], ids=["write", "read"]
)
def test_requests_match_their_golden_bytes_whole_and_byte_at_a_time(
    frame: Request, golden: bytes
) -> None:
    assert b"".join(encode_request(frame)) == golden
    for decode in (decode_all, decode_bytewise):
        (got,) = decode(RequestDecoder(), golden)
        assert same(got, frame)


@pytest.mark.parametrize(
    ("frame", "golden"),
    [(STAT_REPLY, STAT_REPLY_BYTES), (FENCED_REPLY, FENCED_REPLY_BYTES)],
    ids=["stat", "fenced"],
)
def test_replies_match_their_golden_bytes_whole_and_byte_at_a_time(
    frame: Reply, golden: bytes
) -> None:
    assert b"".join(encode_reply(frame)) == golden
    for decode in (decode_all, decode_bytewise):
        (got,) = decode(ReplyDecoder(), golden)
        assert same(got, frame)


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    frames = [WRITE, READ_RAW, WRITE]
    stream = b"".join(b"".join(encode_request(f)) for f in frames)
    got = decode_all(RequestDecoder(), stream)
    assert len(got) == 3 and all(same(g, f) for g, f in zip(got, frames, strict=True))


def test_a_big_payload_is_received_straight_into_its_own_buffer() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    frame = Request(Op.CREATE, 1, 1, oid=2, version=3, payload=data)
    stream = b"".join(encode_request(frame)) + b"".join(encode_request(READ_RAW))
    decoder = RequestDecoder()
    got: list[object] = []
    at, chunks = 0, 0
    while at < len(stream):
        room = decoder.get_buffer()
        n = min(len(room), 100_000, len(stream) - at)
        room[:n] = stream[at : at + n]
        decoder.buffer_updated(n)
        at, chunks = at + n, chunks + 1
        while (event := decoder.next_event()) is not NEED_DATA:
            got.append(event)
    assert len(got) == 2 and same(got[0], frame) and same(got[1], READ_RAW)
    assert isinstance(got[0], Request) and isinstance(got[0].payload, bytearray)
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    "exc",
    [
        ObjectNotFound(0x1234),
        StaleVersion(0x1234, 5, 9),
        ChecksumError(0x1234, "bytes 65536+65536"),
        WrongEpoch(theirs=8, ours=7),
        Fenced(5, 10, 12),
        NotAccepting("node n1 is not accepting writes"),
        StoreClosed(),
        PeerUnavailable("127.0.0.1:7000", "connection refused"),
        BlockError(Errno.ENOSPC, "disk full"),
        BlockError(Errno.EPERM),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_service_error_round_trips_with_its_type_and_fields(exc: BlockError) -> None:
    reply = error_reply(WRITE, exc)
    (decoded,) = decode_all(ReplyDecoder(), b"".join(encode_reply(reply)))
    assert isinstance(decoded, Reply)
    again = reply_error(decoded)
    assert type(again) is type(exc)
    assert str(again) == str(exc)
    assert vars(again) == vars(exc)


def test_other_exceptions_become_block_errors() -> None:
    invalid = reply_error(error_reply(WRITE, ValueError("bad range")))
    assert type(invalid) is BlockError and invalid.errno == Errno.EINVAL
    crashed = reply_error(error_reply(WRITE, RuntimeError("boom")))
    assert type(crashed) is BlockError and crashed.errno == Errno.EIO
    assert "internal error" in str(crashed)


def test_a_long_error_message_is_cut_to_the_limit() -> None:
    reply = error_reply(WRITE, NotAccepting("é" * 5000))
    assert len(bytes(reply.payload)) <= 4096
    assert str(reply_error(reply)) == "é" * 2048


def test_payload_helpers_round_trip() -> None:
    oids = [0, 1, (1 << 64) - 1]
    assert unpack_oids(pack_oids(oids)) == oids
    assert unpack_crcs(pack_crcs([0, 0xFFFFFFFF, 7])) == [0, 0xFFFFFFFF, 7]
    pairs = [(1, 2), ((1 << 64) - 1, 0)]
    assert unpack_versions(pack_versions(pairs)) == pairs
    assert pack_oids([1]) == b"\0" * 7 + b"\1"  # big-endian on the wire


@pytest.mark.parametrize(
    "build",
    [
        lambda: Request(Op.READ, 1, 1, oid=1, offset=64 << 20, length=1),
        lambda: Request(Op.READ, 1, 1, oid=1, payload=b"x"),
        lambda: Request(Op.STAT, 1, 1, oid=1, token=3),
        lambda: Request(Op.WRITE, 1, 1, oid=1, flags=Flag.RAW),
        lambda: Request(Op.SYNC, 1, 1, flags=Flag.ALL, payload=pack_oids([1])),
        lambda: Request(Op.SYNC, 1, 1, payload=b"1234"),
        lambda: Request(Op.FENCE, 1, 1, oid=1 << 24, token=1),
        lambda: Request(Op.LIST, 1 << 64, 1),
        lambda: Reply(Op.STAT, 1, fields=(1, 1, 1)),
        lambda: Reply(Op.CHECKSUMS, 1, fields=(1, 65537, 0), payload=pack_crcs([1])),
        lambda: Reply(Op.WRITE, 1, Status.NOT_ACCEPTING, payload=b"\xff"),
    ],
)
def test_invalid_frames_cannot_be_built(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def _request_header(**change: int) -> bytes:
    values = {
        "magic": 0x4F565251, "op": 1, "flags": 0, "reserved": 0, "id": 1, "epoch": 1,
        "oid": 1, "offset": 0, "length": 1, "version": 0, "token": 0, "size": 0,
    }  # fmt: skip
    values.update(change)
    return struct.pack(">IBBHQQQIIQQI", *values.values())


@pytest.mark.parametrize(
    "garbage",
    [
        _request_header(magic=0x12345678),
        _request_header(op=0),
        _request_header(op=11),
        _request_header(reserved=1),
        _request_header(flags=Flag.ALL),
        _request_header(version=1),
        _request_header(offset=64 << 20),
        _request_header(op=Op.WRITE, length=0, size=(64 << 20) + 1),
        _request_header(op=Op.SYNC, oid=0, length=0, size=(8 << 20) + 8),
    ],
)
def test_a_bad_request_header_is_a_protocol_error_before_its_payload(garbage: bytes) -> None:
    decoder = RequestDecoder()
    decoder.receive_data(garbage)
    with pytest.raises(PeerProtocolError):
        decoder.next_event()
    with pytest.raises(PeerProtocolError):
        decoder.next_event()  # and it stays broken


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">IBBHQQQQI", 0x4F565250, Op.LIST, 0, 0, 1, 0, 0, 0, (256 << 20) + 16),
        struct.pack(">IBBHQQQQI", 0x4F565250, Op.READ, 0, 0, 1, 0, 0, 0, (64 << 20) + 1),
        struct.pack(">IBBHQQQQI", 0x4F565250, Op.WRITE, 10, 0, 1, 0, 0, 0, 0),
        struct.pack(">IBBHQQQQI", 0x4F565250, Op.WRITE, Status.BLOCK_ERROR, 0, 1, 4, 0, 0, 0),
        struct.pack(">IBBHQQQQI", 0x4F565250, Op.WRITE, Status.NOT_ACCEPTING, 0, 1, 0, 0, 0, 1)
        + b"\xff",
    ],
    ids=["list-too-big", "read-too-big", "unknown-status", "unknown-errno", "not-utf8"],
)
def test_a_bad_reply_is_a_protocol_error(garbage: bytes) -> None:
    decoder = ReplyDecoder()
    decoder.receive_data(garbage)
    with pytest.raises(PeerProtocolError):
        decoder.next_event()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), chunk=st.integers(1, 64))
def test_random_bytes_give_frames_or_a_protocol_error(data: bytes, chunk: int) -> None:
    for decoder in (RequestDecoder(), ReplyDecoder()):
        with contextlib.suppress(PeerProtocolError):
            for at in range(0, len(data), chunk):
                decoder.receive_data(data[at : at + chunk])
                while decoder.next_event() is not NEED_DATA:
                    pass


@settings(max_examples=300, deadline=None)
@given(
    golden=st.sampled_from([WRITE_BYTES, READ_RAW_BYTES, STAT_REPLY_BYTES, FENCED_REPLY_BYTES]),
    flips=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=3),
)
def test_corrupted_valid_frames_give_frames_or_a_protocol_error(
    golden: bytes, flips: list[tuple[int, int]]
) -> None:
    raw = bytearray(golden)
    for at, value in flips:
        raw[at % len(raw)] = value
    decoder = RequestDecoder() if golden[3] == 0x51 else ReplyDecoder()
    with contextlib.suppress(PeerProtocolError):
        decode_all(decoder, bytes(raw))
