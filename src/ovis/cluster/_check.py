"""`ovis vdi check`: compare an object's replicas and repair them from the newest.

For each object, every replica of the current epoch reports (version,
length, CRC of each 64 KiB sub-block) without anyone reading data.  Then:

- a replica that lacks the object, or holds an older version, is *stale*:
  with `repair`, the newest copy is written to it (with its version, so a
  write racing the repair can never be undone by it);
- replicas with the same (newest) version but different CRCs have
  *diverged*, which the write path should make impossible.  Nothing is
  silently discarded: the copy that loses (the one fewer replicas agree
  with; on a tie, not the primary's) is saved under `aside_dir` as
  `<oid>-<node>-v<version>` before it is overwritten, and reported.

Checks run in the current epoch; a replica on another epoch makes the check
of that object retry in the newer epoch.  A replica that does not answer is
reported as unreachable, never as repaired.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ovis.store import ObjectNotFound

from ._model import ClusterView, NodeInfo, PeerUnavailable, WrongEpoch
from ._peer_client import PeerPool
from ._service import MANAGEMENT_TOKEN, StorageService

_Summary = tuple[int, int, tuple[int, ...]]  # version, length, CRCs


@dataclasses.dataclass
class CheckReport:
    """What a check found, object by object (oids as 16 hex digits)."""

    objects: int = 0
    replicas: int = 0
    stale: list[str] = dataclasses.field(default_factory=list)  # "oid on node (vN < vM)"
    repaired: list[str] = dataclasses.field(default_factory=list)
    diverged: list[str] = dataclasses.field(default_factory=list)  # "oid on node: saved to PATH"
    unreachable: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Every replica answered, and every problem found was repaired."""
        return not self.unreachable and len(self.repaired) == len(self.stale) + len(self.diverged)


class ReplicaChecker:
    """Checks (and repairs) objects across their replicas in the current epoch."""

    def __init__(
        self, service: StorageService, view: ClusterView, pool: PeerPool, aside_dir: Path
    ) -> None:
        self._service = service
        self._view = view
        self._pool = pool
        self._aside = aside_dir

    async def check(self, oids: Iterable[int], *, repair: bool) -> CheckReport:
        report = CheckReport()
        for oid in oids:
            for _ in range(5):
                try:
                    await self._check_one(oid, report, repair)
                    break
                except WrongEpoch:
                    await self._view.wait_epoch(self._view.epoch.number, timeout=2.0)
            report.objects += 1
        return report

    async def _summary(self, node: NodeInfo, epoch: int, oid: int) -> _Summary | None:
        try:
            if node.id == self._view.node_id:
                version, length, crcs = await self._service.checksums(epoch, oid)
            else:
                version, length, crcs = await self._pool.checksums(node.peer, epoch, oid)
        except ObjectNotFound:
            return None
        return version, length, tuple(crcs)

    async def _check_one(self, oid: int, report: CheckReport, repair: bool) -> None:
        epoch = self._view.epoch
        replicas = epoch.replicas(oid)
        found: dict[str, _Summary | None] = {}
        for node in replicas:
            try:
                found[node.id] = await self._summary(node, epoch.number, oid)
            except PeerUnavailable:
                report.unreachable.append(f"{oid:016x} on {node.id}")
        report.replicas += len(found)
        present = {nid: s for nid, s in found.items() if s is not None}
        if not present:
            return  # nobody has it: it was never written (or removed everywhere)
        newest = max(s[0] for s in present.values())
        votes = Counter(s for s in present.values() if s[0] == newest)
        primary = found.get(replicas[0].id)
        winner = max(votes, key=lambda s: (votes[s], s == primary))
        source = next(nid for nid, s in present.items() if s == winner)
        for node in replicas:
            if node.id not in found:
                continue
            have = found[node.id]
            if have == winner:
                continue
            what = f"{oid:016x} on {node.id}"
            if have is not None and have[0] == newest:
                saved = await self._set_aside(node, epoch.number, oid, newest)
                report.diverged.append(f"{what}: version {newest} differs; saved to {saved}")
            else:
                old = "missing" if have is None else f"v{have[0]}"
                report.stale.append(f"{what} ({old} < v{newest})")
            if repair:
                await self._copy(oid, epoch.number, epoch.member(source), node)
                report.repaired.append(what)

    async def _read(self, node: NodeInfo, epoch: int, oid: int) -> tuple[int, bytes]:
        if node.id == self._view.node_id:
            return await self._service.read_object(epoch, oid, raw=True)
        return await self._pool.read_object(node.peer, epoch, oid, raw=True)

    async def _set_aside(self, node: NodeInfo, epoch: int, oid: int, version: int) -> Path:
        _, data = await self._read(node, epoch, oid)
        self._aside.mkdir(parents=True, exist_ok=True)
        path = self._aside / f"{oid:016x}-{node.id}-v{version}"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return path

    async def _copy(self, oid: int, epoch: int, source: NodeInfo | None, target: NodeInfo) -> None:
        assert source is not None
        version, data = await self._read(source, epoch, oid)
        if target.id == self._view.node_id:
            # Straight into the store (an equal version is accepted: it replaces a diverged copy).
            await self._service.store.create_and_write(oid, data, version)
            await self._service.store.sync([oid])
        else:
            await self._pool.create(target.peer, epoch, oid, data, version, MANAGEMENT_TOKEN)
            await self._pool.sync(target.peer, epoch, [oid])
