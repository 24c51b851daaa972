"""PeerServer and PeerPool over real TCP on 127.0.0.1, around a real StorageService."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from ovis.block._device import BlockError
from ovis.cluster._model import Fenced, NotAccepting, PeerUnavailable, WrongEpoch
from ovis.cluster._peer_client import PeerPool, split_address
from ovis.cluster._peer_server import PeerServer
from ovis.cluster._service import StorageService
from ovis.nbd._constants import Errno
from ovis.store import ChecksumError, LocalObjectStore, ObjectNotFound, ObjectStat, StaleVersion

from .test_service import FixedView

OID = 0x0000_0005_0000_0001
SUB = 64 * 1024
LOOPS = ["asyncio", "uvloop"]


def run(main: Callable[[], Awaitable[None]], loop: str = "asyncio") -> None:
    async def wrapped() -> None:
        await main()

    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(wrapped())


class Peer:
    """A node's replica side: store, service and PeerServer on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.view = FixedView()
        self.store = LocalObjectStore(root / "objects", fsync=False)
        self.service = StorageService(self.store, self.view, root / "fences.json")
        self.server: PeerServer | None = None
        self.port = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def epoch(self) -> int:
        return self.view.epoch.number

    async def start(self) -> None:
        self.server = PeerServer(self.service)
        _, self.port = await self.server.listen("127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.aclose()
            self.server = None

    async def aclose(self) -> None:
        await self.stop()
        await self.store.aclose()


@contextlib.asynccontextmanager
async def serving(root: Path, **pool_options: float) -> AsyncIterator[tuple[Peer, PeerPool]]:
    """A started Peer and a PeerPool, both closed however the test ends.

    (uvloop's loop.close() waits forever for a server left open.)
    """
    peer = Peer(root)
    pool = PeerPool(**pool_options)
    try:
        await peer.start()
        yield peer, pool
    finally:
        await pool.aclose()
        await peer.aclose()


class Gate:
    """An ensure_current hook that holds chosen oids until released."""

    def __init__(self, *held: int) -> None:
        self.held = set(held)
        self.waiting: set[int] = set()
        self.open = asyncio.Event()

    async def __call__(self, oid: int) -> None:
        if oid in self.held:
            self.waiting.add(oid)
            await self.open.wait()


@pytest.mark.parametrize("loop", LOOPS)
def test_every_operation_round_trips(tmp_path: Path, loop: str) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (peer, pool):
            a, e = peer.addr, peer.epoch
            data = bytes(range(256)) * (2 * SUB // 256) + b"end"
            await pool.create(a, e, OID, data, 1, 0)
            await pool.write(a, e, OID, 10, b"patch", 2, 0)
            want = bytearray(data)
            want[10:15] = b"patch"
            assert bytes(await pool.read(a, e, OID, 0, len(want))) == want
            assert bytes(await pool.read(a, e, OID, 5, 10, raw=True)) == want[5:15]
            assert await pool.read_object(a, e, OID) == (2, bytes(want))
            assert await pool.read_object(a, e, OID, raw=True) == (2, bytes(want))
            assert await pool.stat(a, e, OID) == ObjectStat(2, len(want))
            assert await pool.stat(a, e, OID, raw=True) == ObjectStat(2, len(want))
            assert await pool.checksums(a, e, OID) == await peer.service.checksums(e, OID)
            assert await pool.list(a, e) == [(OID, 2)]
            await pool.sync(a, e, [OID, OID + 1])
            await pool.sync(a, e, None)
            await pool.fence(a, e, 5, 40)
            assert peer.service.fence_of(5) == 40
            await pool.remove(a, e, OID, 40)
            with pytest.raises(ObjectNotFound):
                await pool.stat(a, e, OID)
            assert await pool.list(a, e) == []

    run(main, loop)


def test_service_errors_arrive_as_their_own_types(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (peer, pool):
            a, e = peer.addr, peer.epoch
            with pytest.raises(ObjectNotFound) as missing:
                await pool.read(a, e, OID, 0, 1)
            assert missing.value.oid == OID
            await pool.create(a, e, OID, b"v5", 5, 0)
            with pytest.raises(StaleVersion) as stale:
                await pool.write(a, e, OID, 0, b"v4", 4, 0)
            assert (stale.value.version, stale.value.current) == (4, 5)
            with pytest.raises(WrongEpoch) as wrong:
                await pool.stat(a, e + 1, OID)
            assert (wrong.value.theirs, wrong.value.ours) == (e, e + 1)
            await pool.fence(a, e, 5, 9)
            with pytest.raises(Fenced) as fenced:
                await pool.write(a, e, OID, 0, b"x", 6, 8)
            assert (fenced.value.vid, fenced.value.token, fenced.value.newest) == (5, 8, 9)
            with pytest.raises(BlockError) as invalid:
                await pool.fence(a, e, 5, (1 << 64) - 1)  # a fence nobody could pass
            assert invalid.value.errno == Errno.EINVAL
            peer.view.accepting = False
            with pytest.raises(NotAccepting):
                await pool.remove(a, e, OID, 9)

        # A flipped data byte on disk: the replica refuses to return it.
        path = tmp_path / "objects" / "obj" / f"{OID:016x}"
        raw = bytearray(path.read_bytes())
        raw[16 * 1024] ^= 0xFF
        path.write_bytes(raw)
        async with serving(tmp_path) as (peer, pool):
            with pytest.raises(ChecksumError) as corrupt:
                await pool.read(peer.addr, e, OID, 0, 2)
            assert corrupt.value.oid == OID

    run(main)


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_on_one_connection_are_pipelined_and_answered_out_of_order(
    tmp_path: Path, loop: str
) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (peer, pool):
            a, e = peer.addr, peer.epoch
            oids = [OID + i for i in range(200)]
            for oid in oids:
                await pool.create(a, e, oid, oid.to_bytes(8, "big") * 512, 1, 0)
            gate = Gate(oids[0])
            peer.service.ensure_current = gate
            first = asyncio.create_task(pool.read(a, e, oids[0], 0, 8))
            # 199 more, past the server's limit of requests in flight per connection
            rest = await asyncio.gather(*(pool.read(a, e, oid, 8, 8) for oid in oids[1:]))
            assert [bytes(r) for r in rest] == [oid.to_bytes(8, "big") for oid in oids[1:]]
            assert gate.waiting == {oids[0]} and not first.done()
            gate.open.set()
            assert bytes(await first) == oids[0].to_bytes(8, "big")
            assert peer.server is not None and len(peer.server._connections) == 1

    run(main, loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stopped_server_fails_calls_quickly_and_the_pool_reconnects(
    tmp_path: Path, loop: str
) -> None:
    async def main() -> None:
        async with serving(tmp_path, timeout=30) as (peer, pool):
            a, e = peer.addr, peer.epoch
            await pool.create(a, e, OID, b"data", 1, 0)
            gate = Gate(OID)
            peer.service.ensure_current = gate
            in_flight = asyncio.create_task(pool.read(a, e, OID, 0, 4))
            while not gate.waiting:
                await asyncio.sleep(0.001)
            began = time.monotonic()
            stopping = asyncio.create_task(peer.stop())
            with pytest.raises(PeerUnavailable) as lost:
                await in_flight
            assert lost.value.peer == a
            with pytest.raises(PeerUnavailable):
                await pool.stat(a, e, OID)  # nothing listens there now
            assert time.monotonic() - began < 1.0
            gate.open.set()
            await stopping
            peer.service.ensure_current = None
            await peer.start()  # same port
            assert await pool.read_object(a, e, OID) == (1, b"data")

    run(main, loop)


def test_a_request_left_unanswered_times_out_as_peer_unavailable(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, timeout=0.3) as (peer, pool):
            a, e = peer.addr, peer.epoch
            await pool.create(a, e, OID, b"data", 1, 0)
            await pool.create(a, e, OID + 1, b"more", 1, 0)
            gate = Gate(OID)
            peer.service.ensure_current = gate
            stuck = asyncio.create_task(pool.read(a, e, OID, 0, 4))
            began = time.monotonic()
            with pytest.raises(PeerUnavailable, match="no reply"):
                await stuck
            assert time.monotonic() - began < 2.0
            gate.open.set()
            assert bytes(await pool.read(a, e, OID + 1, 0, 4)) == b"more"  # a new connection

    run(main)


def test_a_peer_that_refuses_connections_is_unavailable() -> None:
    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        pool = PeerPool(connect_timeout=1.0)
        calls = [pool.stat(f"127.0.0.1:{port}", 1, OID) for _ in range(5)]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            assert isinstance(result, PeerUnavailable)
        await pool.aclose()
        with pytest.raises(PeerUnavailable, match="closed"):
            await pool.stat(f"127.0.0.1:{port}", 1, OID)

    run(main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_sending_garbage_is_disconnected_while_others_keep_working(
    tmp_path: Path, loop: str
) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (peer, pool):
            a, e = peer.addr, peer.epoch
            await pool.create(a, e, OID, b"fine", 1, 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", peer.port)
            writer.write(b"GET / HTTP/1.1\r\n" * 8)
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # the server hung up
            writer.close()
            await writer.wait_closed()
            assert bytes(await pool.read(a, e, OID, 0, 4)) == b"fine"

    run(main, loop)


def test_a_peer_sending_bad_replies_is_unavailable() -> None:
    async def main() -> None:
        async def bad_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(60)
            writer.write(b"\0" * 100)
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_server(bad_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = PeerPool()
        with pytest.raises(PeerUnavailable, match="protocol error"):
            await pool.stat(f"127.0.0.1:{port}", 1, OID)
        await pool.aclose()
        server.close()
        await server.wait_closed()

    run(main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_32_mib_object_is_written_and_read_back(tmp_path: Path, loop: str) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (peer, pool):
            a, e = peer.addr, peer.epoch
            data = bytes(range(251)) * ((32 << 20) // 251 + 1)
            data = data[: 32 << 20]
            await pool.create(a, e, OID, b"", 1, 0)
            await pool.write(a, e, OID, 0, data, 2, 0)
            back = await pool.read(a, e, OID, 0, len(data))
            assert back == data
            assert await pool.read_object(a, e, OID) == (2, data)

    run(main, loop)


def test_peer_addresses_are_host_and_port() -> None:
    assert split_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert split_address("[::1]:7000") == ("::1", 7000)
    assert split_address("node-1.example:1") == ("node-1.example", 1)
    for bad in ("127.0.0.1", "[::1]", "::1:7000x", "host:0", ":7000", "[::1]7000"):
        with pytest.raises(ValueError):
            split_address(bad)


@pytest.mark.parametrize("loop", LOOPS)
def test_throughput_over_loopback_is_printed(
    tmp_path: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a check: 4 KiB and 1 MiB writes with 32 in flight, for the record (-s)."""
    in_flight, seconds = 32, 0.7
    versions = [1] * in_flight

    async def measure(pool: PeerPool, peer: Peer, size: int) -> float:
        a, e = peer.addr, peer.epoch
        data = b"\xa5" * size
        done = 0
        deadline = time.monotonic() + seconds

        async def worker(n: int) -> None:
            nonlocal done
            offset = 0
            while time.monotonic() < deadline:
                versions[n] += 1
                await pool.write(a, e, OID + n, offset, data, versions[n], 0)
                offset = (offset + size) % (4 << 20)
                done += 1

        began = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(in_flight)))
        return done / (time.monotonic() - began)

    async def main() -> None:
        async with serving(tmp_path) as (peer, pool):
            for n in range(in_flight):
                await pool.create(peer.addr, peer.epoch, OID + n, bytes(4 << 20), 1, 0)
            small = await measure(pool, peer, 4096)
            big = await measure(pool, peer, 1 << 20)
            with capsys.disabled():
                print(
                    f"\npeer rpc on {loop}: {small:,.0f} 4 KiB writes/s, {big:,.0f} MiB/s in 1 MiB"
                )

    run(main, loop)
