"""SIGTERM with writes in flight: every acknowledged write is on disk, and the exit status is 0."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command, Request
from tests.conftest import Served

from .helpers import connected

MiB = 1 << 20


def test_sigterm_with_writes_in_flight_exits_0_with_the_data_on_disk(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--port", "0")
    client = connected(served)
    assert client.tx is not None
    blocks = {i * 128 * 1024: bytes([i % 251 + 1]) * (128 * 1024) for i in range(160)}  # 20 MiB
    wire = bytearray()
    for cookie, (offset, data) in enumerate(blocks.items(), start=1):
        wire += b"".join(client.tx.send(Request(Command.WRITE, cookie, offset, len(data), 0, data)))
    client.send(bytes(wire[: len(wire) // 2]))
    client.replies(range(1, 11))  # the server is busy with the batch
    served.signal(signal.SIGTERM)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        client.send(bytes(wire[len(wire) // 2 :]))  # it may stop reading: also fine
    # Whatever the server still answers is a success; then it closes.
    results = client.replies_until_closed()
    assert all(r.error == 0 for r in results.values())
    acked = set(results)
    client.close()
    assert served.proc.wait(20) == 0, served.output()
    on_disk = image.read_bytes()
    offsets = list(blocks)
    for cookie in sorted(acked):
        offset = offsets[cookie - 1]
        assert on_disk[offset : offset + 128 * 1024] == blocks[offset], f"acked write {cookie} lost"
    assert "Traceback" not in served.output()
