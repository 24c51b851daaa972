"""Faults under load on a real cluster: no acknowledged write is lost, no read is stale.

Each test runs the Checker (checker.py) through one node while a fault hits the cluster,
then reads every block back through the surviving nodes: every acknowledged write (or a
newer one) must be there, and nothing older.  The tally of each run is printed (`pytest
-s` shows it).  Volumes are 128 MiB with the default 4 MiB objects: 32 objects, so every
node holds some.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from .checker import Checker, Tally
from .harness import ETCD, Cluster, Netns

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed")

MiB = 1024 * 1024
VOLUME = "vm"
SIZE = 128 * MiB


def new_volume(cluster: Cluster, node: int = 0) -> Checker:
    cluster.vdi("create", VOLUME, str(SIZE), node=node)
    return Checker(SIZE, blocks=1024)


async def verify_through(cluster: Cluster, checker: Checker, nodes: list[int]) -> list[Tally]:
    tallies = []
    for node in nodes:
        tally = await checker.verify(cluster.nbd_uri(node, VOLUME))
        print(f"  verify through n{node}: {tally.line()}")
        assert tally.clean, tally.problems
        tallies.append(tally)
    return tallies


async def until_closed_on(cluster: Cluster, node: int, timeout: float = 45) -> None:
    """Wait until `node` has no connection to the volume: the requests a zombie connection
    left there have all finished one way or the other, so none can land after a verify."""
    async with asyncio.timeout(timeout):
        while (await asyncio.to_thread(cluster.get, node, f"/v1/volumes/{VOLUME}"))["connections"]:
            await asyncio.sleep(0.1)


def drive(
    cluster: Cluster, checker: Checker, fault: Callable[[], Awaitable[list[Tally]]]
) -> list[Tally]:
    """Run `fault` while the checker writes through n0; the checker is closed however it ends."""

    async def scenario() -> list[Tally]:
        try:
            await checker.start(cluster.nbd_uri(0, VOLUME))
            return await fault()
        finally:
            await checker.aclose()

    return asyncio.run(scenario())


def report(name: str, cluster: Cluster, tallies: list[Tally]) -> None:
    last = tallies[-1]
    print(
        f"TALLY {name}: runs {len(tallies)}, faults {cluster.faults}, writes {last.writes} "
        f"({last.acked} acked, {last.unknown} unknown, {last.failed} failed), blocks checked "
        f"{sum(t.blocks for t in tallies)}, lost {sum(t.lost for t in tallies)}, stale "
        f"{sum(t.stale for t in tallies)}, corrupt {sum(t.corrupt for t in tallies)}"
    )


def assert_replicated(cluster: Cluster, copies: int) -> None:
    """Every object is on exactly `copies` live nodes, and every replica is current."""
    counts = cluster.copy_counts()
    wrong = {oid: n for oid, n in counts.items() if n != copies}
    assert counts and not wrong, f"objects not on {copies} nodes: {wrong}"
    check = cluster.vdi_json("check", VOLUME, node=cluster.live()[0])
    assert check["clean"], check


async def verify_after_n0_returns(cluster: Cluster, checker: Checker, after: str) -> list[Tally]:
    """Close the checker, wait until n0 has served its last request, verify through n1 and
    n2, then (if n0 rejoins, which is not required) through n0: it must be current too."""
    await checker.aclose()  # the zombie connection too: the old node sees DISC
    await until_closed_on(cluster, 0)
    tallies = await verify_through(cluster, checker, [1, 2])
    try:
        await asyncio.to_thread(cluster.wait_epoch, {0, 1, 2}, 15)
    except AssertionError as exc:
        print(f"  n0 did not rejoin after {after}: {exc}")
        return tallies
    return tallies + await verify_through(cluster, checker, [0])


def report_with_n0(name: str, cluster: Cluster, tallies: list[Tally]) -> None:
    """The tally; if n0 rejoined, it is a replica again, with current copies."""
    if len(tallies) == 3:
        cluster.wait_recovered()
        assert_replicated(cluster, 2)
    report(name, cluster, tallies)


def test_replica_killed_while_writing(tmp_path: Path) -> None:
    """kill -9 of a replica: writes go on in the next epoch; recovery makes 2 copies again."""
    with Cluster(tmp_path, nodes=3, copies=2) as cluster:
        checker = new_volume(cluster)

        async def fault() -> list[Tally]:
            await checker.wait_acked(800)
            await asyncio.to_thread(cluster.kill, 2)
            await checker.wait_acked(400)
            await asyncio.to_thread(cluster.wait_epoch, {0, 1})
            await checker.wait_acked(800)
            await checker.stop()
            await asyncio.to_thread(cluster.wait_recovered)
            return await verify_through(cluster, checker, [0, 1])

        tallies = drive(cluster, checker, fault)
        assert_replicated(cluster, 2)
        report("replica killed", cluster, tallies)


def test_gateway_killed_client_reconnects_elsewhere(tmp_path: Path) -> None:
    """kill -9 of the node the client writes through: it goes on through another node."""
    with Cluster(tmp_path, nodes=3, copies=2) as cluster:
        checker = new_volume(cluster)

        async def fault() -> list[Tally]:
            await checker.wait_acked(800)
            await asyncio.to_thread(cluster.kill, 0)
            checker.switch(cluster.nbd_uri(1, VOLUME))  # once n0's lease expires
            await checker.wait_acked(800)
            await asyncio.to_thread(cluster.wait_epoch, {1, 2})
            await checker.wait_acked(400)
            await checker.stop()
            return await verify_through(cluster, checker, [1, 2])

        tallies = drive(cluster, checker, fault)
        assert tallies[-1].reconnects >= 1
        cluster.wait_recovered()
        assert_replicated(cluster, 2)
        report("gateway killed", cluster, tallies)


def test_etcd_member_killed_writes_go_on(tmp_path: Path) -> None:
    """kill -9 of the etcd leader in a 3-member etcd: writes continue, nothing is lost."""
    with Cluster(tmp_path, nodes=3, copies=2, etcd=3) as cluster:
        checker = new_volume(cluster)
        epoch = cluster.wait_epoch()

        async def fault() -> list[Tally]:
            await checker.wait_acked(800)
            leader = await asyncio.to_thread(cluster.etcd.leader)
            await asyncio.to_thread(cluster.kill_etcd, leader)
            await checker.wait_acked(1200)
            await checker.stop()
            return await verify_through(cluster, checker, [1, 2])

        tallies = drive(cluster, checker, fault)
        after = cluster.wait_epoch()
        print(f"  epoch {epoch} before the etcd kill, {after} after")
        report("etcd member killed", cluster, tallies)


def test_frozen_gateway_cannot_overwrite_the_new_writer(tmp_path: Path) -> None:
    """SIGSTOP of the writer's node past its session TTL; a new writer takes over through
    another node; after SIGCONT the old node's queued writes must be fenced or refused."""
    with Cluster(tmp_path, nodes=3, copies=2) as cluster:
        checker = new_volume(cluster)

        async def fault() -> list[Tally]:
            await checker.wait_acked(400)
            await asyncio.to_thread(cluster.stop, 0)  # with a batch in flight
            checker.switch(cluster.nbd_uri(1, VOLUME))
            await asyncio.to_thread(cluster.wait_epoch, {1, 2})
            await checker.wait_acked(400)  # rewrites the frozen batch's blocks first
            await asyncio.to_thread(cluster.cont, 0)
            await asyncio.sleep(2 * cluster.session_ttl)  # the old node works its queue
            await checker.wait_acked(200)
            return await verify_after_n0_returns(cluster, checker, "SIGCONT")

        report_with_n0("frozen gateway", cluster, drive(cluster, checker, fault))


def test_restarted_node_with_stale_data_serves_no_stale_reads(tmp_path: Path) -> None:
    """A node killed, writes go on, the node restarts on its old data: reads through it
    are current at once (while its recovery runs), and recovery brings it up to date."""
    with Cluster(tmp_path, nodes=3, copies=3) as cluster:
        checker = new_volume(cluster)

        async def fault() -> list[Tally]:
            await checker.wait_acked(800)
            await asyncio.to_thread(cluster.kill, 2)
            await asyncio.to_thread(cluster.wait_epoch, {0, 1})
            await checker.wait_acked(1200)  # every object changes while n2 is away
            await checker.stop()
            await asyncio.to_thread(cluster.restart, 2)
            # At once: n2's recovery (a second or two here) runs under these reads.
            reads = time.time()
            tallies = await verify_through(cluster, checker, [2])
            reads_done = time.time()
            status = await asyncio.to_thread(cluster.get, 2, "/v1/recovery")
            recovered = status["started"] + status.get("seconds", 0)
            overlap = min(reads_done, recovered) - max(reads, status["started"])
            print(f"  reads through n2 overlapped its recovery for {overlap:.2f} s: {status}")
            await checker.start(cluster.nbd_uri(2, VOLUME))  # n2 as the gateway now
            await checker.wait_acked(400)
            await checker.stop()
            await asyncio.to_thread(cluster.wait_recovered)
            return tallies + await verify_through(cluster, checker, [2, 0, 1])

        tallies = drive(cluster, checker, fault)
        assert_replicated(cluster, 3)
        report("stale node restarted", cluster, tallies)


def test_recovery_throttle_does_not_hold_back_client_writes(tmp_path: Path) -> None:
    """A node rejoins with stale copies and --recovery-max-rate 1M: the objects clients
    write are recovered at once (out of order), so writes go on at a useful rate while the
    throttled background recovery is far from done."""
    with Cluster(tmp_path, nodes=3, copies=3) as cluster:
        checker = new_volume(cluster)

        async def fault() -> list[Tally]:
            await checker.wait_acked(400)
            await asyncio.to_thread(cluster.kill, 2)
            await asyncio.to_thread(cluster.wait_epoch, {0, 1})
            await checker.wait_acked(1200)
            await asyncio.to_thread(cluster.restart, 2, "--recovery-max-rate", "1M")
            await asyncio.to_thread(cluster.wait_epoch, {0, 1, 2})
            await checker.wait_acked(400, timeout=15)
            await checker.stop()
            status = await asyncio.to_thread(cluster.get, 2, "/v1/recovery")
            print(f"  n2 recovery after 400 more writes: {status}")
            return await verify_through(cluster, checker, [0])

        tallies = drive(cluster, checker, fault)
        report("writes during throttled recovery", cluster, tallies)


def test_gateway_cut_off_from_etcd_stops_acknowledging(tmp_path: Path) -> None:
    """A partition between the writer's node and etcd (its peers still reach it): once its
    session lapses it acknowledges nothing more, a new writer takes over elsewhere, and
    after the partition heals the old node overwrites nothing.

    Not a full network partition: on loopback only, n0 reaches etcd through a Blackhole
    forwarder that the test silences; node-to-node traffic is untouched.
    """
    with Cluster(tmp_path, nodes=3, copies=2, blackholed={0}) as cluster:
        checker = new_volume(cluster)

        async def fault() -> list[Tally]:
            await checker.wait_acked(400)
            cluster.cut(0)
            await asyncio.to_thread(cluster.wait_epoch, {1, 2}, 30, [1, 2])
            acked = checker.acked
            await asyncio.sleep(1)
            view = await asyncio.to_thread(cluster.get, 0, "/v1/cluster")
            assert not view["accepting_writes"], view
            assert checker.acked == acked, "n0 acknowledged writes after its session lapsed"
            checker.switch(cluster.nbd_uri(1, VOLUME))
            await checker.wait_acked(400)
            cluster.heal(0)
            await asyncio.sleep(2 * cluster.session_ttl)
            await checker.wait_acked(200)
            return await verify_after_n0_returns(cluster, checker, "the partition healed")

        report_with_n0("gateway cut off from etcd", cluster, drive(cluster, checker, fault))


def test_gateway_partitioned_from_everything_is_fenced(tmp_path: Path) -> None:
    """A full partition: every node in its own network namespace, and n0's link taken down,
    so etcd, its peers and its client all lose it at once.  Its session lapses, a new
    writer takes over through n1, and when the link comes back n0 overwrites nothing and
    rejoins with current copies."""
    why = Netns.available()
    if why is not None:
        pytest.skip(f"cannot make network namespaces here: {why}")
    with Cluster(tmp_path, nodes=3, copies=2, netns=True) as cluster:
        checker = new_volume(cluster)

        async def fault() -> list[Tally]:
            await checker.wait_acked(400)
            cluster.partition(0)
            await asyncio.to_thread(cluster.wait_epoch, {1, 2}, 30, [1, 2])
            view = await asyncio.to_thread(cluster.get, 0, "/v1/cluster")
            assert not view["accepting_writes"], view
            checker.switch(cluster.nbd_uri(1, VOLUME))
            await checker.wait_acked(400)
            cluster.unpartition(0)
            await asyncio.sleep(2 * cluster.session_ttl)
            await checker.wait_acked(200)
            return await verify_after_n0_returns(cluster, checker, "the link came back")

        report_with_n0(
            "gateway partitioned from everything", cluster, drive(cluster, checker, fault)
        )
