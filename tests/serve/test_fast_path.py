"""The READ/WRITE fast path: data straight from and to the image, on every framing.

A READ of 64 KiB or more is sent as its header plus sendfile(2) when the
socket has room, and through the transport with pread when it has not; the
two must interleave with the other replies without a byte out of place.  A
plain WRITE is a pwrite at once, and its payload buffer is reused for the
next one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd import Command
from ovis.nbd.client import NbdClient
from tests.conftest import Served

from .helpers import RawClient, connected

KiB, MiB = 1 << 10, 1 << 20
SIZES = [4 * KiB, 64 * KiB - 1, 64 * KiB, 1 * MiB + 7, 8 * MiB]


@pytest.fixture
def random_image(tmp_path: Path) -> Path:
    path = tmp_path / "random.img"
    path.write_bytes(os.urandom(32 * MiB))
    return path


def _unix_client(served: Served, *, structured: bool) -> RawClient:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(served.uri()).query)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(query["socket"][0])
    client = RawClient(sock)
    client.handshake("", structured=structured)
    return client


@pytest.mark.parametrize("structured", [True, False], ids=["structured", "simple"])
@pytest.mark.parametrize("over", ["tcp", "unix"])
def test_reads_of_every_size_return_the_image(
    serve: Callable[..., Served], random_image: Path, tmp_path: Path, structured: bool, over: str
) -> None:
    args = ["--unix", str(tmp_path / "s.sock")] if over == "unix" else []
    served = serve(str(random_image), *args)
    client = (
        _unix_client(served, structured=structured)
        if over == "unix"
        else connected(served, structured=structured)
    )
    expected = random_image.read_bytes()
    try:
        offset = 12_345
        cookies = []
        for length in SIZES * 2:  # pipelined: zero-copy and batched replies interleave
            cookies.append((client.request(Command.READ, offset, length).cookie, offset, length))
            offset = (offset + 3 * MiB + 511) % (16 * MiB)
        results = client.replies(cookie for cookie, _, _ in cookies)
        for cookie, at, length in cookies:
            assert results[cookie].error == 0
            assert results[cookie].data == expected[at : at + length], (at, length)
    finally:
        client.close()


def test_a_reader_that_falls_behind_gets_every_byte_in_order(
    serve: Callable[..., Served], random_image: Path
) -> None:
    """The socket fills mid-reply: the rest goes through the transport, in order."""
    served = serve(str(random_image))
    client = connected(served)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
    expected = random_image.read_bytes()
    try:
        wanted = []
        for n in range(48):
            length = 2 * MiB + n * 4099 if n % 3 else 512  # big and small, mixed
            offset = (n * 5 * MiB + n) % (28 * MiB)
            wanted.append((client.request(Command.READ, offset, length).cookie, offset, length))
        time.sleep(0.5)  # let the server fill the socket and queue the rest
        results = client.replies(cookie for cookie, _, _ in wanted)
        for cookie, offset, length in wanted:
            assert results[cookie].data == expected[offset : offset + length], (offset, length)
    finally:
        client.close()


def test_a_read_sees_the_write_before_it(serve: Callable[..., Served], random_image: Path) -> None:
    served = serve(str(random_image))
    client = connected(served)
    try:
        data = os.urandom(3 * MiB)
        assert client.call(Command.WRITE, 5 * MiB + 1, len(data), data=data).error == 0
        assert client.call(Command.READ, 5 * MiB + 1, len(data)).data == data
    finally:
        client.close()
    assert random_image.read_bytes()[5 * MiB + 1 : 8 * MiB + 1] == data


def test_reads_past_the_end_of_a_short_file_are_zeros(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    """--size beyond the file: sendfile stops at the file's end, zeros follow."""
    path = tmp_path / "short.img"
    head = os.urandom(3 * MiB + 100)
    path.write_bytes(head)
    served = serve(str(path), "--size", "8M")
    client = connected(served)
    try:
        result = client.call(Command.READ, 2 * MiB, 4 * MiB)
    finally:
        client.close()
    assert result.error == 0
    assert result.data == head[2 * MiB :] + bytes(6 * MiB - len(head))


def test_extended_headers_read_and_write_on_the_fast_path(
    serve: Callable[..., Served], random_image: Path
) -> None:
    """Replies built straight from the request carry the extended-header framing too."""
    served = serve(str(random_image))
    expected = bytearray(random_image.read_bytes())

    async def scenario() -> None:
        client = await NbdClient.connect(served.uri(), extended=True)
        try:
            assert client.extended
            data = os.urandom(2 * MiB)
            await client.write(MiB + 3, data)  # a plain WRITE: served at once
            await client.write(7 * MiB, data[:4096], fua=True)  # FUA: the full path
            expected[MiB + 3 : 3 * MiB + 3] = data
            expected[7 * MiB : 7 * MiB + 4096] = data[:4096]
            for offset, length in [(0, 4 * MiB), (MiB + 3, 4096), (7 * MiB - 5, 64 * KiB)]:
                got = await client.read(offset, length)
                assert got == expected[offset : offset + length], (offset, length)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_pipelined_writes_reusing_one_buffer_each_land_whole(
    serve: Callable[..., Served], random_image: Path
) -> None:
    served = serve(str(random_image))
    client = connected(served)
    blocks = [os.urandom(MiB) for _ in range(12)]
    try:
        cookies = [
            client.request(Command.WRITE, n * MiB + 512, MiB, data=block).cookie
            for n, block in enumerate(blocks)
        ]
        assert all(r.error == 0 for r in client.replies(cookies).values())
        for n, block in enumerate(blocks):
            assert client.call(Command.READ, n * MiB + 512, MiB).data == block, n
    finally:
        client.close()
    assert random_image.read_bytes()[512 : 12 * MiB + 512] == b"".join(blocks)
