"""Reading and writing inodes in an ObjectStore, and what the store says about them."""

from __future__ import annotations

from ovis.store import ObjectStore

from ._errors import VolumeIOError
from ._inode import Inode
from ._oid import data_oid, inode_oid


async def load_inode(store: ObjectStore, vid: int, spec: str) -> Inode:
    """Read volume `vid`'s inode; VolumeIOError if it does not decode."""
    oid = inode_oid(vid)
    raw = await store.read(oid, 0, (await store.stat(oid)).length)
    try:
        return Inode.decode(raw)
    except ValueError as exc:
        raise VolumeIOError(f"inode of {spec!r} is corrupt: {exc}") from None


async def write_inode(store: ObjectStore, inode: Inode) -> int:
    """Reserve versions, write and sync `inode`; return the version it used.

    Durable on return, so the catalog may name it, and every version up to
    `inode.versions_reserved` may be used by a writer of this volume.
    """
    version = inode.reserve_versions()
    oid = inode_oid(inode.vid)
    await store.create_and_write(oid, inode.encode(), version)
    await store.sync([oid])
    return version


async def has_data_beyond(store: ObjectStore, inode: Inode, size: int) -> bool:
    """Whether shrinking `inode` to `size` would drop a non-zero byte."""
    index, at = divmod(size, inode.object_size)
    beyond = inode.owners[index + (1 if at else 0) :]
    if beyond.count(0) != len(beyond):
        return True
    owner = inode.owners[index] if at and index < len(inode.owners) else 0
    if not owner:
        return False
    end = min(inode.object_size, inode.size - index * inode.object_size)
    tail = await store.read(data_oid(owner, index), at, end - at)
    return bytes(tail) != bytes(len(tail))
