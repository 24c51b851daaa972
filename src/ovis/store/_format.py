"""On-disk layout of one object file in the local store.

```
 file offset 0          8 KiB          16 KiB (HEADER_SIZE)
             | header slot 0 | header slot 1 | object data, sparse ...
```

A header slot (little-endian): magic "OVISOBJ1" | seq u64 | version u64 |
length u64 | flags u32 | slot CRC32 u32 (over the fields before it and the
CRC array) | zeros to byte 64 | CRC32 array, one u32 per 64 KiB sub-block.
Entry k is the CRC32 of data bytes [k*64 KiB, (k+1)*64 KiB), zero-padded
past the end of the object.

Header writes alternate between the two slots (slot = seq % 2), and a reader
takes the valid slot with the higher seq, so a header torn by a crash falls
back to the previous one instead of making the object unreadable.

Data starts at a page-aligned offset, so the object's holes are the file's
holes and reads and writes need no shifting beyond one constant.

Why 64 KiB sub-blocks: the CRC array of a 64 MiB object fits in one page
beside the header; the cost is read amplification, as a 4 KiB read verifies
(and so reads) the 64 KiB around it.  NBD clients mostly read 64 KiB or more.
"""

from __future__ import annotations

import array
import dataclasses
import struct
import sys
import zlib

from ._interface import MAX_OBJECT_SIZE, ChecksumError

HEADER_SLOT = 8192
HEADER_SIZE = 2 * HEADER_SLOT
SUB_BLOCK = 64 * 1024
SUB_BLOCKS = MAX_OBJECT_SIZE // SUB_BLOCK
MAGIC = b"OVISOBJ1"

# The CRC array may lag the data: set (and made durable) before the first
# write after the object is opened, cleared on a clean close.  Found set on
# open, it means the store stopped mid-session, and the CRCs are recomputed
# from the data, which is then trusted as a disk would be after power loss.
FLAG_DIRTY = 1

_FIXED = struct.Struct("<8sQQQI")
_CHECK = struct.Struct("<I")
_CRC_OFFSET = 64
SLOT_BYTES = _CRC_OFFSET + 4 * SUB_BLOCKS

ZERO_BLOCK = bytes(SUB_BLOCK)
ZERO_CRC = zlib.crc32(ZERO_BLOCK)


def _zero_crcs() -> array.array[int]:
    return array.array("I", [ZERO_CRC]) * SUB_BLOCKS


@dataclasses.dataclass(slots=True)
class ObjectHeader:
    """The header of one object file, as held in memory."""

    version: int
    length: int
    flags: int = 0
    seq: int = 0
    crcs: array.array[int] = dataclasses.field(default_factory=_zero_crcs)

    @property
    def dirty(self) -> bool:
        return bool(self.flags & FLAG_DIRTY)


def block_crc(data: bytes | bytearray | memoryview) -> int:
    """CRC32 of one sub-block's bytes, zero-padded to SUB_BLOCK."""
    crc = zlib.crc32(data)
    short = SUB_BLOCK - len(data)
    return zlib.crc32(memoryview(ZERO_BLOCK)[:short], crc) if short else crc


def next_slot(header: ObjectHeader) -> tuple[int, bytes]:
    """Advance `header.seq`; return the file offset and bytes of its next slot."""
    header.seq += 1
    crcs = array.array("I", header.crcs)
    if sys.byteorder == "big":
        crcs.byteswap()
    fixed = _FIXED.pack(MAGIC, header.seq, header.version, header.length, header.flags)
    body = crcs.tobytes()
    check = zlib.crc32(body, zlib.crc32(fixed))
    pad = bytes(_CRC_OFFSET - _FIXED.size - _CHECK.size)
    return (header.seq % 2) * HEADER_SLOT, fixed + _CHECK.pack(check) + pad + body


def _decode_slot(raw: memoryview) -> ObjectHeader | None:
    magic, seq, version, length, flags = _FIXED.unpack_from(raw)
    (check,) = _CHECK.unpack_from(raw, _FIXED.size)
    body = raw[_CRC_OFFSET:SLOT_BYTES]
    if magic != MAGIC or zlib.crc32(body, zlib.crc32(raw[: _FIXED.size])) != check:
        return None
    if length > MAX_OBJECT_SIZE:
        return None
    crcs = array.array("I")
    crcs.frombytes(body)
    if sys.byteorder == "big":
        crcs.byteswap()
    return ObjectHeader(version=version, length=length, flags=flags, seq=seq, crcs=crcs)


def decode_header(raw: bytes | bytearray, oid: int) -> ObjectHeader:
    """Parse both slots and return the newer valid one; ChecksumError if neither is."""
    view = memoryview(raw)
    if len(view) < HEADER_SLOT + SLOT_BYTES:
        raise ChecksumError(oid, "header is truncated")
    slots = [_decode_slot(view[at : at + SLOT_BYTES]) for at in (0, HEADER_SLOT)]
    valid = [slot for slot in slots if slot is not None]
    if not valid:
        raise ChecksumError(oid, "header")
    return max(valid, key=lambda slot: slot.seq)
