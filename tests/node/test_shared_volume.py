"""All connections to a volume share one open volume, so CAN_MULTI_CONN is truthful.

A write on one connection is visible on another at once, and a FLUSH on
the other makes it durable: the node is killed right after and the write is
still there.  The volume is opened by the first connection and closed by
the last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ovis.nbd._constants import TransmissionFlag
from ovis.nbd.client import NbdClient

from .conftest import MiB, Node


def test_connections_share_one_volume(start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": 16 * MiB})

    def state(expected: tuple[bool, int]) -> bool:
        """Whether the volume reaches (open, connections); a DISC is handled a little later."""
        deadline = time.monotonic() + 5
        while True:
            info = node.api_call("GET", "/v1/volumes/vm")[1]
            if (info["open"], info["connections"]) == expected or time.monotonic() > deadline:
                return (info["open"], info["connections"]) == expected
            time.sleep(0.02)

    async def share_then_close() -> None:
        a, b = [await NbdClient.connect(node.uri("vm")) for _ in range(2)]
        assert a.has(TransmissionFlag.CAN_MULTI_CONN) and b.has(TransmissionFlag.CAN_MULTI_CONN)
        assert state((True, 2))
        await a.write(MiB, b"\xa1" * 8192)
        assert await b.read(MiB, 8192) == b"\xa1" * 8192  # not flushed, yet visible
        node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "mid"})  # while open
        await b.write(MiB, b"\xb2" * 4096)
        assert await a.read(MiB, 8192) == b"\xb2" * 4096 + b"\xa1" * 4096
        refused = [
            ("DELETE", "/v1/volumes/vm", None),
            ("POST", "/v1/volumes/vm/rollback", {"tag": "mid"}),
            ("POST", "/v1/volumes/vm/resize", {"size": MiB}),
        ]
        with ThreadPoolExecutor() as pool:  # each waits a moment for the clients to leave
            for status, answer in pool.map(lambda r: node.api_call(*r), refused):
                assert status == 409 and "open over NBD" in answer["error"], answer
        source = tmp_path / "source.img"
        source.write_bytes(b"\x01" * 4096)
        assert "has 2 NBD connection(s)" in node.vdi_error("import", "vm", str(source))
        await a.aclose()
        assert state((True, 1))
        await b.aclose()

    asyncio.run(share_then_close())
    assert state((False, 0))
    assert node.read("vm@mid", MiB, 8192) == b"\xa1" * 8192

    async def write_here_flush_there() -> None:
        a, b = [await NbdClient.connect(node.uri("vm")) for _ in range(2)]
        await a.write(3 * MiB, b"\xc3" * MiB)  # allocates a new object: metadata too
        await b.flush()
        node.kill()  # with both clients still connected
        for client in (a, b):
            await client.aclose()

    asyncio.run(write_here_flush_there())
    node = start_node(node.data_dir)
    assert node.read("vm", 3 * MiB, MiB) == b"\xc3" * MiB
