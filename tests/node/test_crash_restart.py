"""Every write acknowledged before a completed FLUSH survives `kill -9` of the node.

A client we control writes numbered 4 KiB blocks over two connections,
flushing on one of them after every batch of 16 and noting which writes
each completed flush covered.  The node is killed with a batch in flight,
restarted on the same data directory, and every block is checked exactly:
it must hold the last write to it that a completed flush covered (zeros if
none), or one of the writes issued after that flush (they may or may not
have landed).  Small objects (64 KiB) make most flushes commit metadata.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from ovis.nbd.client import NbdClient

from .conftest import Node

BLOCK = 4096
BLOCKS = 1024  # a 4 MiB volume: 1,616 writes overwrite some blocks
BATCH = 16
KILL_AFTER = 100  # completed flushes


def pattern(number: int) -> bytes:
    return struct.pack("<Q", number) * (BLOCK // 8)


def block_of(number: int) -> int:
    return number * 7919 % BLOCKS  # every block in turn, overwritten after BLOCKS writes


async def write_until_killed(node: Node) -> tuple[int, int]:
    """Write and flush until the node is killed; (writes covered by the last flush, issued)."""
    clients = [await NbdClient.connect(node.uri("vm")) for _ in range(2)]
    covered = issued = 0
    try:
        for flushes in range(KILL_AFTER + 1):
            batch = range(issued + 1, issued + BATCH + 1)
            writes = [
                asyncio.ensure_future(clients[n % 2].write(block_of(n) * BLOCK, pattern(n)))
                for n in batch
            ]
            issued += BATCH
            if flushes == KILL_AFTER:
                await asyncio.sleep(0.001)  # let the batch reach the node
                node.kill()
                await asyncio.gather(*writes, return_exceptions=True)
                break
            await asyncio.gather(*writes)
            await clients[flushes % 2].flush()
            covered = issued
    finally:
        for client in clients:
            await client.aclose()
    return covered, issued


def test_flushed_writes_survive_kill_9(start_node: Callable[..., Node]) -> None:
    node = start_node()
    size = BLOCKS * BLOCK
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": size, "object_size": "64K"})
    covered, issued = asyncio.run(write_until_killed(node))
    assert covered == KILL_AFTER * BATCH and issued == covered + BATCH

    node = start_node(node.data_dir)
    data = node.read("vm", 0, size)
    allowed: dict[int, set[bytes]] = {b: {bytes(BLOCK)} for b in range(BLOCKS)}
    for number in range(1, issued + 1):
        block = block_of(number)
        if number <= covered:
            allowed[block] = {pattern(number)}  # the latest flushed write replaces older ones
        else:
            allowed[block].add(pattern(number))
    for block in range(BLOCKS):
        got = data[block * BLOCK : (block + 1) * BLOCK]
        assert got in allowed[block], f"block {block}: {got[:8].hex()} lost a flushed write"

    node.write("vm", 0, b"\x99" * BLOCK)  # and the restarted node takes writes again
    assert node.read("vm", 0, BLOCK) == b"\x99" * BLOCK
