"""ReplicaChecker (`ovis vdi check`): stale replicas repaired, diverged ones kept aside."""

from __future__ import annotations

from pathlib import Path

from ovis.cluster import ReplicaChecker

from .inproc import start_cluster, stop_all
from .test_gateway import OID, copies_of, run


def test_a_healthy_object_is_clean(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 3, recovery=False)
        try:
            assert nodes[0].gateway is not None
            await nodes[0].gateway.create_and_write(OID, b"a" * 70000, 3)
            checker = ReplicaChecker(nodes[1].service, nodes[1].member, nodes[1].pool, tmp_path)
            report = await checker.check([OID, OID + 1], repair=False)
            assert report.clean and report.objects == 2 and report.replicas == 6
            assert not (report.stale or report.diverged or report.repaired)
        finally:
            await stop_all(nodes)

    run(main())


def test_a_missing_or_older_replica_is_repaired_from_the_newest(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 3, recovery=False)
        try:
            assert nodes[0].gateway and nodes[1].store and nodes[2].store
            await nodes[0].gateway.create_and_write(OID, b"new" * 1000, 5)
            await nodes[0].gateway.create_and_write(OID + 1, b"x" * 10, 5)
            await nodes[1].store.remove(OID)
            await nodes[1].store.create_and_write(OID, b"old" * 1000, 4)  # behind
            await nodes[2].store.remove(OID + 1)  # lost
            checker = ReplicaChecker(nodes[0].service, nodes[0].member, nodes[0].pool, tmp_path)
            found = await checker.check([OID, OID + 1], repair=False)
            assert len(found.stale) == 2 and not found.repaired and not found.clean
            fixed = await checker.check([OID, OID + 1], repair=True)
            assert len(fixed.repaired) == 2 and fixed.clean
            assert {c for c in (await copies_of(nodes, OID)).values()} == {(5, b"new" * 1000)}
            assert len(await copies_of(nodes, OID + 1)) == 3
        finally:
            await stop_all(nodes)

    run(main())


def test_a_diverged_copy_is_saved_aside_before_it_is_overwritten(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = await start_cluster(tmp_path, 3, 3, recovery=False)
        try:
            assert nodes[0].gateway and nodes[2].store
            await nodes[0].gateway.create_and_write(OID, b"good" * 100, 7)
            await nodes[2].store.create_and_write(OID, b"evil" * 100, 7)  # same version
            aside = tmp_path / "divergent"
            checker = ReplicaChecker(nodes[0].service, nodes[0].member, nodes[0].pool, aside)
            report = await checker.check([OID], repair=True)
            assert len(report.diverged) == 1 and "n2" in report.diverged[0]
            saved = aside / f"{OID:016x}-n2-v7"
            assert saved.read_bytes() == b"evil" * 100
            assert {c for c in (await copies_of(nodes, OID)).values()} == {(7, b"good" * 100)}
        finally:
            await stop_all(nodes)

    run(main())
