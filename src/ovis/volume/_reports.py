"""What the library reports: volume info, the snapshot/clone tree, and diffs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ovis.store import ObjectStore

from ._catalog import CatalogEntry
from ._errors import InvalidVolumeArgument
from ._inode import Inode
from ._oid import data_oid


@dataclasses.dataclass(frozen=True, slots=True)
class VolumeInfo:
    """One volume or snapshot, as `list`, `info` and `tree` report it.

    Byte counts are at object granularity: `used_bytes` is what the objects
    this volume owns cover, `shared_bytes` what allocated objects owned by
    an ancestor cover (Sheepdog's "Used" and "Shared").
    """

    name: str
    tag: str
    vid: int
    parent_vid: int
    size: int
    object_size: int
    created: float  # seconds since the epoch; for a snapshot, when it was taken
    used_bytes: int
    shared_bytes: int
    snapshot_count: int  # of a working volume: how many snapshots its name has
    open: bool

    @property
    def snapshot(self) -> bool:
        return bool(self.tag)

    @property
    def spec(self) -> str:
        """`name` or `name@tag`."""
        return f"{self.name}@{self.tag}" if self.tag else self.name


@dataclasses.dataclass(frozen=True, slots=True)
class VolumeNode:
    """A volume in the tree, with the volumes that branched from it."""

    info: VolumeInfo
    children: tuple[VolumeNode, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ChangedExtent:
    """A byte range that differs between two volumes; `zero` if it now reads as zeros."""

    offset: int
    length: int
    zero: bool


def _covered_bytes(inode: Inode, owned_by_self: bool) -> int:
    count = inode.owned_objects() if owned_by_self else inode.shared_objects()
    total = count * inode.object_size
    last = inode.owners[-1] if inode.owners else 0
    if last and (last == inode.vid) == owned_by_self:  # the last object may be partial
        total -= inode.n_objects * inode.object_size - inode.size
    return total


def volume_info(
    entry: CatalogEntry, inode: Inode, snapshot_count: int, is_open: bool
) -> VolumeInfo:
    created_ns = inode.snapshot_ns if entry.snapshot and inode.snapshot_ns else inode.created_ns
    return VolumeInfo(
        name=entry.name,
        tag=entry.tag,
        vid=entry.vid,
        parent_vid=inode.parent_vid,
        size=inode.size,
        object_size=inode.object_size,
        created=created_ns / 1e9,
        used_bytes=_covered_bytes(inode, True),
        shared_bytes=_covered_bytes(inode, False),
        snapshot_count=0 if entry.snapshot else snapshot_count,
        open=is_open,
    )


def volume_tree(infos: Iterable[VolumeInfo]) -> list[VolumeNode]:
    """Arrange volumes by parent; a volume whose parent is gone is a root."""
    infos = sorted(infos, key=lambda info: (info.created, info.vid))
    vids = {info.vid for info in infos}
    children: dict[int, list[VolumeInfo]] = {}
    for info in infos:
        parent = info.parent_vid if info.parent_vid in vids else 0
        children.setdefault(parent, []).append(info)

    def node(info: VolumeInfo) -> VolumeNode:
        return VolumeNode(info, tuple(node(child) for child in children.get(info.vid, [])))

    return [node(info) for info in children.get(0, [])]


async def diff_volumes(
    store: ObjectStore, old: Inode, new: Inode, granularity: int | None = None
) -> list[ChangedExtent]:
    """Ranges of `new` that may differ from `old`, found from the owner arrays.

    Objects with the same owner are the same object, so only objects whose
    owner differs are reported.  With `granularity` (a power of two dividing
    the object size) those objects are also read and compared in chunks of
    that size, dropping the chunks that are in fact equal.
    """
    size = new.object_size
    if old.object_size != size:
        raise InvalidVolumeArgument("volumes with different object sizes cannot be compared")
    if granularity is not None and (
        granularity <= 0 or size % granularity or granularity & (granularity - 1)
    ):
        raise InvalidVolumeArgument(f"granularity {granularity} does not divide {size}")
    out: list[ChangedExtent] = []
    for index, owner in enumerate(new.owners):
        before = old.owners[index] if index < len(old.owners) else 0
        if owner == before:
            continue
        start, end = index * size, min((index + 1) * size, new.size)
        if granularity is None:
            _append(out, ChangedExtent(start, end - start, owner == 0))
            continue
        a = await _object_bytes(store, old, index)
        b = await _object_bytes(store, new, index)
        zeros = bytes(granularity)
        for at in range(0, end - start, granularity):
            chunk = b[at : at + granularity]
            if chunk != a[at : at + granularity]:
                n = min(granularity, end - start - at)
                _append(out, ChangedExtent(start + at, n, chunk == zeros[: len(chunk)]))
    return out


async def _object_bytes(store: ObjectStore, inode: Inode, index: int) -> bytes:
    owner = inode.owners[index] if index < len(inode.owners) else 0
    if owner == 0:
        return bytes(inode.object_size)
    return bytes(await store.read(data_oid(owner, index), 0, inode.object_size))


def _append(out: list[ChangedExtent], extent: ChangedExtent) -> None:
    last = out[-1] if out else None
    if last and last.zero == extent.zero and last.offset + last.length == extent.offset:
        out[-1] = ChangedExtent(last.offset, last.length + extent.length, last.zero)
    else:
        out.append(extent)
