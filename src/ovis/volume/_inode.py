"""Inode: a volume's metadata and its per-object owner array.

`owners[i]` is the vid of the volume whose data object holds bytes
[i * object_size, (i+1) * object_size); 0 means never written (zeros).  A
snapshot or clone starts with a copy of the array, so it shares every object
until it writes one (Sheepdog's data_vdi_id[]).

Serialised as a fixed little-endian header, the UTF-8 name and tag, then the
owner array as u32s through zlib: runs of one owner, the common case,
compress to almost nothing.

Versions: every object write needs a version greater than any the object
may already hold, including objects leaked by a crash.  A writer therefore
reserves a block of versions by persisting `versions_reserved` before using
any of them (see `reserve_versions`); after a crash, the next writer starts
above everything the last one could have used.
"""

from __future__ import annotations

import array
import dataclasses
import struct
import sys
import zlib

from ovis.store import MAX_OBJECT_SIZE

from ._oid import MAX_VID

DEFAULT_OBJECT_SIZE = 4 * 1024 * 1024
MIN_OBJECT_SIZE = 4096
MAX_OBJECTS = 1 << 22  # 16 TiB at 4 MiB objects; a 16 MiB owner array at most
VERSION_BLOCK = 1 << 32

_MAGIC = b"OVIN"
_FORMAT = 1
_SNAPSHOT = 1
_HEAD = struct.Struct("<4sBBHIIQIQQQHHI")


def _owners(n: int) -> array.array[int]:
    return array.array("I", bytes(4 * n))


@dataclasses.dataclass(slots=True)
class Inode:
    """One volume or snapshot; the owner array is the only mutable part in use."""

    vid: int
    name: str
    size: int
    object_size: int = DEFAULT_OBJECT_SIZE
    parent_vid: int = 0
    snapshot: bool = False
    tag: str = ""
    created_ns: int = 0
    snapshot_ns: int = 0
    versions_reserved: int = 0
    owners: array.array[int] = dataclasses.field(default_factory=lambda: array.array("I"))

    def __post_init__(self) -> None:
        os_ = self.object_size
        if os_ & (os_ - 1) or not MIN_OBJECT_SIZE <= os_ <= MAX_OBJECT_SIZE:
            raise ValueError(
                f"object size {os_} is not a power of two in {MIN_OBJECT_SIZE}..{MAX_OBJECT_SIZE}"
            )
        if not 0 <= self.size <= MAX_OBJECTS * os_:
            raise ValueError(f"size {self.size} is outside 0..{MAX_OBJECTS * os_}")
        if not self.owners and self.size:
            self.owners = _owners(self.n_objects)
        if len(self.owners) != self.n_objects:
            raise ValueError(f"{len(self.owners)} owners for {self.n_objects} objects")

    @property
    def n_objects(self) -> int:
        return -(-self.size // self.object_size)

    def reserve_versions(self) -> int:
        """Reserve the next block of versions; return its first.

        The inode must be written (with the returned version) and synced
        before any other version of the block is used.
        """
        first = self.versions_reserved + 1
        self.versions_reserved += VERSION_BLOCK
        return first

    def child(self, vid: int, name: str, created_ns: int) -> Inode:
        """A new writable volume sharing every object of this one."""
        return Inode(
            vid=vid,
            name=name,
            size=self.size,
            object_size=self.object_size,
            parent_vid=self.vid,
            created_ns=created_ns,
            owners=array.array("I", self.owners),
        )

    def resize(self, size: int) -> None:
        """Change the size; objects past the end are forgotten, new ones are holes."""
        if not 0 <= size <= MAX_OBJECTS * self.object_size:
            raise ValueError(f"size {size} is outside 0..{MAX_OBJECTS * self.object_size}")
        n = -(-size // self.object_size)
        if n < len(self.owners):
            del self.owners[n:]
        else:
            self.owners.extend(_owners(n - len(self.owners)))
        self.size = size

    def owned_objects(self) -> int:
        """How many objects this volume holds itself."""
        return self.owners.count(self.vid)

    def shared_objects(self) -> int:
        """How many allocated objects belong to an ancestor."""
        return len(self.owners) - self.owners.count(0) - self.owners.count(self.vid)

    def encode(self) -> bytes:
        name, tag = self.name.encode(), self.tag.encode()
        owners = array.array("I", self.owners)
        if sys.byteorder == "big":
            owners.byteswap()
        head = _HEAD.pack(
            _MAGIC,
            _FORMAT,
            _SNAPSHOT if self.snapshot else 0,
            0,
            self.vid,
            self.parent_vid,
            self.size,
            self.object_size,
            self.created_ns,
            self.snapshot_ns,
            self.versions_reserved,
            len(name),
            len(tag),
            len(owners),
        )
        return head + name + tag + zlib.compress(owners.tobytes())

    @classmethod
    def decode(cls, raw: bytes | bytearray | memoryview) -> Inode:
        """Parse `encode`'s output; ValueError if it is not an intact inode."""
        raw = bytes(raw)
        if len(raw) < _HEAD.size:
            raise ValueError("inode is truncated")
        (
            magic,
            fmt,
            flags,
            _,
            vid,
            parent,
            size,
            object_size,
            created_ns,
            snapshot_ns,
            reserved,
            name_len,
            tag_len,
            n_owners,
        ) = _HEAD.unpack_from(raw)
        if magic != _MAGIC or fmt != _FORMAT:
            raise ValueError(f"not an inode (magic {magic!r}, format {fmt})")
        at = _HEAD.size
        name = raw[at : at + name_len].decode()
        tag = raw[at + name_len : at + name_len + tag_len].decode()
        try:
            packed = zlib.decompress(raw[at + name_len + tag_len :], bufsize=4 * n_owners)
        except zlib.error as exc:
            raise ValueError(f"inode owner array is corrupt: {exc}") from None
        if len(packed) != 4 * n_owners or (object_size and n_owners != -(-size // object_size)):
            raise ValueError("inode owner array has the wrong length")
        owners = array.array("I")
        owners.frombytes(packed)
        if sys.byteorder == "big":
            owners.byteswap()
        if owners and max(owners) > MAX_VID:
            raise ValueError("inode owner array names an impossible volume id")
        return cls(
            vid=vid,
            name=name,
            size=size,
            object_size=object_size,
            parent_vid=parent,
            snapshot=bool(flags & _SNAPSHOT),
            tag=tag,
            created_ns=created_ns,
            snapshot_ns=snapshot_ns,
            versions_reserved=reserved,
            owners=owners,
        )
