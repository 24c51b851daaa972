"""A full disk under one replica: writes fail with ENOSPC, nothing acknowledged is lost,
every node keeps serving, and once there is room again the replicas converge.

n2's data directory is a small tmpfs mounted by the test (root only; skipped where
mounting is not allowed), later made bigger as an operator would.  With 3 copies on
3 nodes every object has a copy on n2, so writes start failing once its disk is full,
while n0 and n1 still have room.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovis.nbd import Errno
from ovis.nbd._handshake_client import OptionRefused
from ovis.nbd.client import NbdClient, NbdError
from tests.conftest import small_tmpfs

from .harness import ETCD, Cluster

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed")
MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """n2's data directory, on a 24 MiB tmpfs."""
    with small_tmpfs(tmp_path / "data-n2", "24M") as mount:
        yield mount


HALF = MiB // 2


def pattern(n: int, seed: int) -> bytes:
    return bytes([(n * 7 + seed) % 251 + 1]) * HALF


async def connect(uri: str, timeout: float = 15) -> NbdClient:
    """Connect once the node that wrote the volume last has given its lease back."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await NbdClient.connect(uri)
            except OptionRefused as exc:
                if "attached read-write on node" not in str(exc):
                    raise
            await asyncio.sleep(0.1)


async def write_halves(uri: str, writes: dict[int, bytes]) -> tuple[set[int], list[int]]:
    """Write each (offset: data), flushing each; the offsets acknowledged and the errnos."""
    acked: set[int] = set()
    errors: list[int] = []
    client = await connect(uri)
    try:
        for at, data in writes.items():
            try:
                await client.write(at, data)
                await client.flush()
                acked.add(at)
            except NbdError as exc:
                errors.append(exc.errno)
    finally:
        await client.aclose()
    return acked, errors


async def wrong(uri: str, expected: dict[int, bytes]) -> list[int]:
    """The offsets that do not read back as `expected`."""
    client = await connect(uri)
    try:
        return [at for at, data in expected.items() if await client.read(at, len(data)) != data]
    finally:
        await client.aclose()


def test_a_full_disk_on_one_replica_loses_nothing_and_converges_after(
    tmp_path: Path, small_disk: Path
) -> None:
    with Cluster(tmp_path, nodes=3, copies=3) as cluster:
        for name, size in (("vm", "16M"), ("filler", "32M")):
            cluster.vdi("create", name, size, "--object-size", "1M")
        vm = cluster.nbd_uri(0, "vm")
        # The first half of each 1 MiB object, while there is room everywhere.
        first = {n * MiB: pattern(n, 1) for n in range(16)}
        acked, errors = asyncio.run(write_halves(vm, first))
        assert errors == [] and len(acked) == 16
        # Fill n2's disk.
        filler = {n * HALF: pattern(n, 2) for n in range(64)}
        _, errors = asyncio.run(write_halves(cluster.nbd_uri(0, "filler"), filler))
        assert errors and set(errors) == {Errno.ENOSPC}, errors
        # The second halves need new space on n2: they fail there, after n0 and n1
        # applied them.  n2 must never serve its copy without them.
        second = {n * MiB + HALF: pattern(n, 3) for n in range(16)}
        acked, errors = asyncio.run(write_halves(vm, second))
        print(f"\n  disk full on n2: {len(acked)} of 16 writes acknowledged, "
              f"{len(errors)} refused with ENOSPC")  # fmt: skip
        assert errors, "the second halves all fit: the disk was not full"
        assert set(errors) == {Errno.ENOSPC}, "a full disk must read as ENOSPC, not EIO"

        expected = {**first, **{at: second[at] for at in acked}}
        for node in (0, 1, 2):  # n2 serves too: where its copy is behind, from the others
            assert asyncio.run(wrong(cluster.nbd_uri(node, "vm"), expected)) == [], node
        assert all(n.alive for n in cluster.nodes)

        status = cluster.get(2, "/v1/recovery")
        assert status["suspect"] > 0, status  # the copies n2 dropped, waiting for room

        # The operator makes room (above recovery's 256 MiB reserve); n2 fetches what it
        # dropped by itself, and a check then finds every replica current.
        subprocess.run(["mount", "-o", "remount,size=512M", str(small_disk)], check=True)
        deadline = time.monotonic() + 30
        while cluster.get(2, "/v1/recovery")["suspect"]:
            assert time.monotonic() < deadline, cluster.get(2, "/v1/recovery")
            time.sleep(0.2)
        found = cluster.vdi_json("check", "vm")
        assert found["clean"] and not found["stale"] and not found["diverged"], found

        acked, errors = asyncio.run(write_halves(vm, second))
        assert errors == [] and len(acked) == 16
        assert asyncio.run(wrong(cluster.nbd_uri(2, "vm"), {**first, **second})) == []
