"""Garbage collection: removing objects that no inode in the catalog names.

Both passes run after the catalog stopped naming what they remove, and
compute what is still referenced from every live inode, so a crash at any
point leaves only leaks, never a live inode pointing at a removed object.
Removal is idempotent, so an interrupted pass is simply run again.

`reclaim` is the targeted pass a delete runs for the inodes it dropped;
`collect_garbage` lists the whole store and also finds what crashes leaked
(inodes never committed to the catalog, copied-up objects never recorded in
a durable inode, objects of deleted volumes whose reclaim was interrupted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ovis.store import ObjectStore

from ._inode import Inode
from ._oid import ObjectKind, data_oid, inode_oid, parse_oid


@dataclasses.dataclass(frozen=True, slots=True)
class GcReport:
    """What a garbage collection pass found."""

    removed: int  # objects removed
    kept: int  # objects still referenced (or skipped as busy or foreign)


def _referenced(live: Iterable[Inode], only_vids: set[int] | None = None) -> set[int]:
    refs: set[int] = set()
    for inode in live:
        refs.add(inode_oid(inode.vid))
        for index, owner in enumerate(inode.owners):
            if owner and (only_vids is None or owner in only_vids):
                refs.add(data_oid(owner, index))
    return refs


async def reclaim(store: ObjectStore, gone: list[Inode], live: list[Inode]) -> int:
    """Remove the `gone` inodes and the objects they name that no `live` inode does.

    A gone inode names its own objects and possibly objects of ancestors
    deleted earlier (kept then for its sake); objects of live vids are their
    owners' business.  Returns how many objects were removed.
    """
    live_vids = {inode.vid for inode in live}
    candidates: set[int] = set()
    for inode in gone:
        candidates.add(inode_oid(inode.vid))
        for index, owner in enumerate(inode.owners):
            if owner and owner not in live_vids:
                candidates.add(data_oid(owner, index))
    doomed = candidates - _referenced(live, {parse_oid(oid).vid for oid in candidates})
    for oid in sorted(doomed):
        await store.remove(oid)
    await store.sync()
    return len(doomed)


async def collect_garbage(store: ObjectStore, live: list[Inode], busy: set[int]) -> GcReport:
    """Remove every object no `live` inode names.

    Data objects of `busy` vids (volumes open for writing, whose copy-ups
    may be in flight) are left alone; oids this layout cannot produce belong
    to someone else and are left alone too.
    """
    refs = _referenced(live)
    removed = kept = 0
    for oid in await store.list():
        try:
            parsed = parse_oid(oid)
        except ValueError:
            kept += 1
            continue
        if oid in refs or (parsed.kind is ObjectKind.DATA and parsed.vid in busy):
            kept += 1
            continue
        await store.remove(oid)
        removed += 1
    await store.sync()
    return GcReport(removed=removed, kept=kept)
