"""Object ids: where a volume's objects live in the store, as a pure function.

```
 63 ........ 56 | 55 ................ 32 | 31 ................. 0
   kind (8)     |  volume id (24 bits)   |  object index (32 bits)
```

kind 0x00 is a data object: bytes [index * object_size, +object_size) of
the volume whose vid owns it.  kind 0x80 is a volume's inode (index 0).  The
other kinds are reserved, as Sheepdog reserves its vmstate, attribute and
ledger bits.  vid 0 is never a volume: in an inode's owner array it means
"never written", which reads as zeros.

Data oids of one volume are contiguous and sort by index, so a store's
sorted `list()` groups them; every inode sorts after every data object.
"""

from __future__ import annotations

import dataclasses
import enum

VID_BITS = 24
INDEX_BITS = 32
MAX_VID = (1 << VID_BITS) - 1
MAX_INDEX = (1 << INDEX_BITS) - 1
_KIND_SHIFT = VID_BITS + INDEX_BITS


class ObjectKind(enum.IntEnum):
    """What an object holds; the top byte of its oid."""

    DATA = 0x00
    INODE = 0x80


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectId:
    """An oid taken apart."""

    kind: ObjectKind
    vid: int
    index: int


_KINDS = {kind.value: kind for kind in ObjectKind}  # faster than ObjectKind(n) in gc loops


def _check_vid(vid: int) -> None:
    if not 1 <= vid <= MAX_VID:
        raise ValueError(f"volume id {vid} is outside 1..{MAX_VID}")


def data_oid(vid: int, index: int) -> int:
    """The oid of object `index` owned by volume `vid`."""
    _check_vid(vid)
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"object index {index} is outside 0..{MAX_INDEX}")
    return (ObjectKind.DATA << _KIND_SHIFT) | (vid << INDEX_BITS) | index


def inode_oid(vid: int) -> int:
    """The oid of volume `vid`'s inode."""
    _check_vid(vid)
    return (ObjectKind.INODE << _KIND_SHIFT) | (vid << INDEX_BITS)


def parse_oid(oid: int) -> ObjectId:
    """Take an oid apart; ValueError if it is not one this layout can produce."""
    if not 0 <= oid < 1 << 64:
        raise ValueError(f"object id {oid} is not a u64")
    kind = _KINDS.get(oid >> _KIND_SHIFT)
    if kind is None:
        raise ValueError(f"object id {oid:016x} has an unknown kind")
    vid = (oid >> INDEX_BITS) & MAX_VID
    index = oid & MAX_INDEX
    if vid == 0 or (kind is ObjectKind.INODE and index != 0):
        raise ValueError(f"object id {oid:016x} is not a valid {kind.name.lower()} oid")
    return ObjectId(kind, vid, index)
