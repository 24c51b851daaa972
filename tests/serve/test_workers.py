"""--workers: negotiated connections are served by worker processes.

The main process hands each connection over once the handshake is done;
snapshots must still hold writes everywhere, SIGTERM must drain the workers,
--max-connections counts their connections, and a dead worker must not stop
the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ovis.nbd.client import NbdClient
from tests.conftest import OVIS, Served

MiB = 1 << 20


def workers_of(served: Served) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(served.proc.pid), "-f", "_worker_main"],
        capture_output=True,
        text=True,
    ).stdout
    return [int(pid) for pid in out.split()]


async def write_on_each(uri: str, count: int, fill: int, offset: int) -> None:
    clients = [await NbdClient.connect(uri) for _ in range(count)]
    try:
        for n, client in enumerate(clients):
            await client.write(offset + n * MiB, bytes([fill + n]) * MiB)
            await client.flush()
    finally:
        for client in clients:
            await client.aclose()


def test_snapshot_with_workers_holds_and_sees_their_writes(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--name", "disk", "--workers", "2")
    assert len(workers_of(served)) == 2
    asyncio.run(write_on_each(served.uri("disk"), 4, 0x10, 8 * MiB))
    out = subprocess.run(
        [*OVIS, "export", "snapshot", "disk", "--control", str(served.control)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    asyncio.run(write_on_each(served.uri("disk"), 4, 0x40, 8 * MiB))
    snapshot = Path(out).read_bytes()
    live = image.read_bytes()
    for n in range(4):
        at = 8 * MiB + n * MiB
        assert snapshot[at : at + MiB] == bytes([0x10 + n]) * MiB
        assert live[at : at + MiB] == bytes([0x40 + n]) * MiB


def test_sigterm_drains_workers_and_keeps_flushed_data(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--name", "disk", "--workers", "2")
    workers = workers_of(served)

    async def main() -> None:
        clients = [await NbdClient.connect(served.uri("disk")) for _ in range(4)]
        for n, client in enumerate(clients):
            await client.write(n * MiB, bytes([0xA0 + n]) * MiB)
        served.signal(signal.SIGTERM)
        for client in clients:
            # A draining server may close before answering: also fine.
            with contextlib.suppress(ConnectionError, OSError):
                await client.flush()
            await client.aclose()

    asyncio.run(main())
    assert served.proc.wait(30) == 0, served.output()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"worker {pid} still running"
    data = image.read_bytes()
    for n in range(4):
        assert data[n * MiB : (n + 1) * MiB] == bytes([0xA0 + n]) * MiB


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_max_connections_counts_connections_held_by_workers(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--name", "disk", "--workers", "2", "--max-connections", "2")

    async def main() -> None:
        first = [await NbdClient.connect(served.uri("disk")) for _ in range(2)]
        try:
            refused = False
            try:
                extra = await asyncio.wait_for(NbdClient.connect(served.uri("disk")), 10)
                await extra.aclose()
            except Exception:  # refused: closed during or right after the handshake
                refused = True
            assert refused, "a third connection was accepted"
        finally:
            for client in first:
                await client.aclose()
        deadline = time.monotonic() + 10
        while True:  # the workers report the closes; then there is room again
            try:
                client = await NbdClient.connect(served.uri("disk"))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert await client.read(0, 4) == bytes(range(4))
        await client.aclose()

    asyncio.run(main())


def test_a_dead_worker_does_not_stop_the_server(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--name", "disk", "--workers", "2")
    victim = workers_of(served)[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.5)

    async def main() -> None:
        for _ in range(4):
            client = await NbdClient.connect(served.uri("disk"))
            assert await client.read(0, 8) == bytes(range(8))
            await client.aclose()

    asyncio.run(main())
    assert "exited" in served.output()
    assert served.stop() == 0
