"""DISC behind pipelined writes: the writes are finished and on disk before the server closes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd import Command, Request
from tests.conftest import Served

from .helpers import assert_serving, connected


@pytest.mark.parametrize("structured", [False, True], ids=["simple", "structured"])
def test_writes_before_disc_are_on_disk(
    serve: Callable[..., Served], image: Path, structured: bool
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served, structured=structured)
    assert client.tx is not None
    blocks = {i * 65536: bytes([i + 1]) * 65536 for i in range(64)}  # 4 MiB
    wire = bytearray()
    for cookie, (offset, data) in enumerate(blocks.items(), start=1):
        request = Request(Command.WRITE, cookie, offset, len(data), 0, data)
        wire += b"".join(client.tx.send(request))
    wire += b"".join(client.tx.send(Request(Command.DISC, 0)))
    client.send(bytes(wire))  # one burst: the writes are still in flight at DISC
    assert client.closed_by_server(timeout=10), "server did not close after DISC"
    client.close()
    on_disk = image.read_bytes()
    for offset, data in blocks.items():
        assert on_disk[offset : offset + len(data)] == data, f"write at {offset} was lost"
    assert_serving(served, expect=blocks[0][:4096])
