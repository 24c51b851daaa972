"""EtcdCoordinator survives the death of its member and fails fast without quorum."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest

from ovis.coord import EtcdCoordinator, OutcomeUnknown, Unavailable, WatchEvent

from .conftest import EtcdCluster


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_operations_and_watch_continue_when_the_clients_member_is_killed(
    fresh_etcd3: EtcdCluster, role: str
) -> None:
    cluster = fresh_etcd3
    prefix = "/failover/"
    leader = cluster.leader()
    victim = leader if role == "leader" else (leader + 1) % 3
    # The clients talk to the victim first.
    endpoints = cluster.endpoints[victim:] + cluster.endpoints[:victim]

    async def main() -> None:
        async with EtcdCoordinator(endpoints) as writer, EtcdCoordinator(endpoints) as watcher:
            _, start = await watcher.list(prefix)
            seen: list[tuple[WatchEvent, float]] = []

            async def follow() -> None:
                events = watcher.watch(prefix, start + 1)
                async with contextlib.aclosing(events):
                    async for event in events:
                        seen.append((event, time.monotonic()))

            following = asyncio.create_task(follow())
            written: list[int] = []
            latencies: list[float] = []
            killed_at = 0.0
            for i in range(60):
                if i == 20:
                    assert writer.endpoint == watcher.endpoint == cluster.endpoints[victim]
                    cluster.kill(victim)
                    killed_at = time.monotonic()
                began = time.monotonic()
                key = f"{prefix}{i:03}"
                try:
                    written.append(await writer.put(key, str(i).encode()))
                except OutcomeUnknown:  # re-read: a write whose reply was lost may be applied
                    kv = await writer.get(key)
                    if kv is not None:
                        written.append(kv.mod_revision)
                latencies.append(time.monotonic() - began)
                await asyncio.sleep(0.02)
            assert writer.endpoint != cluster.endpoints[victim]
            async with asyncio.timeout(5):
                while len(seen) < len(written):
                    await asyncio.sleep(0.02)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            revisions = [event.revision for event, _ in seen]
            assert revisions == written, "the watch missed or repeated events across failover"
            assert len(written) >= 59, f"only {len(written)} of 60 writes applied"
            resumed = min(at for event, at in seen if event.revision > written[19]) - killed_at
            slowest, usual = max(latencies[20:]) * 1000, sorted(latencies[:20])[10] * 1000
            print(
                f"\nfailover ({role} killed): slowest put {slowest:.0f} ms"
                f" after kill -9 of the client's member (normal {usual:.1f} ms);"
                f" watch delivered again {resumed * 1000:.0f} ms after the kill"
            )
            assert max(latencies) < 3, "failover took too long"

    asyncio.run(main())


def test_losing_quorum_raises_unavailable_quickly(fresh_etcd3: EtcdCluster) -> None:
    cluster = fresh_etcd3

    async def main() -> None:
        async with EtcdCoordinator(cluster.endpoints, timeout=3) as coord:
            session = await coord.open_session(1)
            rev = await coord.put("/quorum/key", b"before", session=session)
            cluster.kill(0)
            cluster.kill(1)
            attempts: dict[str, Callable[[], Awaitable[object]]] = {
                "get": lambda: coord.get("/quorum/key"),
                "put": lambda: coord.put("/quorum/key", b"after"),
            }
            for what, attempt in attempts.items():
                began = time.monotonic()
                try:
                    await attempt()
                except Unavailable as exc:
                    error = exc
                else:
                    raise AssertionError(f"{what} succeeded without quorum")
                elapsed = time.monotonic() - began
                assert "quorum" in str(error) and cluster.endpoints[2] in str(error), error
                assert not isinstance(error, OutcomeUnknown), error
                print(f"\nno quorum: {what} raised Unavailable after {elapsed:.2f}s: {error}")
                assert elapsed < 5
            began = time.monotonic()
            events = coord.watch("/quorum/", rev)
            try:
                async with contextlib.aclosing(events):
                    async for _ in events:
                        pass
            except Unavailable as exc:
                print(f"no quorum: watch raised Unavailable after {time.monotonic() - began:.2f}s")
                assert "quorum" in str(exc)
            assert time.monotonic() - began < 5
            # Keepalives have failed for longer than the TTL: the holder must stop.
            assert not session.alive() and not session.lost.is_set()

    asyncio.run(main())
