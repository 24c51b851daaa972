"""The ovis diff file: a self-describing incremental copy, like rbd export-diff.

A diff file describes itself (all integers little-endian):

```
magic    b"OVISDIFF"  version u32 = 1  header length u32
header   JSON: {"from": {...}, "to": {...}, "size": bytes of "to", "created": ...};
         "from" and "to" hold spec, name, tag, vid and size of the two volumes
records  kind (1 byte) offset u64 length u64, then for kind b"D" `length` bytes
         of data; kind b"Z": the range reads as zeros; kind b"E" ends the
         records (offset 0, length = number of records before it)
digest   sha256 of every byte before it (32 bytes)
```
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from typing import IO, Any

import click

from ._vdi_transfer import CHUNK, Piece

MAGIC = b"OVISDIFF"
VERSION = 1
_START = struct.Struct("<8sII")
RECORD = struct.Struct("<cQQ")
_DIGEST = 32


class DiffWriter:
    """Records to a file, hashed as they go; zero ranges next to each other merge."""

    def __init__(self, out: IO[bytes], header: dict[str, Any]) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.records = 0
        self._zero: list[int] | None = None  # [offset, length] not yet written
        blob = json.dumps(header, sort_keys=True).encode()
        self._put(_START.pack(MAGIC, VERSION, len(blob)) + blob)

    def _put(self, data: bytes) -> None:
        self.digest.update(data)
        self.out.write(data)

    def zero(self, offset: int, length: int) -> None:
        if self._zero is not None and sum(self._zero) == offset:
            self._zero[1] += length
            return
        self._flush_zero()
        self._zero = [offset, length]

    def data(self, offset: int, data: bytes) -> None:
        self._flush_zero()
        self._put(RECORD.pack(b"D", offset, len(data)))
        self._put(data)
        self.records += 1

    def _flush_zero(self) -> None:
        if self._zero is not None:
            self._put(RECORD.pack(b"Z", *self._zero))
            self.records += 1
            self._zero = None

    def finish(self) -> None:
        self._flush_zero()
        self._put(RECORD.pack(b"E", 0, self.records))
        self.out.write(self.digest.digest())


def read_header(f: IO[bytes], path: str) -> dict[str, Any]:
    start = f.read(_START.size)
    if len(start) < _START.size or start[:8] != MAGIC:
        raise click.ClickException(f"{path} is not an ovis diff file")
    _, version, length = _START.unpack(start)
    if version != VERSION:
        raise click.ClickException(f"{path} is a version {version} diff; this ovis reads {VERSION}")
    try:
        header = json.loads(f.read(length))
        sides = (header["from"], header["to"])
        if not isinstance(header["size"], int) or not all(isinstance(s, dict) for s in sides):
            raise ValueError("bad types")
    except (ValueError, KeyError, TypeError):
        raise click.ClickException(f"{path}: the diff header is damaged") from None
    result: dict[str, Any] = header
    return result


def verify(path: str) -> dict[str, Any]:
    """The header, once the whole file checks out against its digest."""
    try:
        with open(path, "rb") as f:
            return _verify(f, path, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


def _verify(f: IO[bytes], path: str, size: int) -> dict[str, Any]:
    header = read_header(f, path)
    f.seek(0)
    digest, left = hashlib.sha256(), size - _DIGEST
    while left > 0:
        block = f.read(min(left, CHUNK))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    if left or f.read(_DIGEST) != digest.digest():
        raise click.ClickException(f"{path} is damaged or truncated (checksum mismatch)")
    return header


def records(f: IO[bytes], path: str) -> Iterator[tuple[Piece, bytes | None]]:
    while True:
        kind, offset, length = RECORD.unpack(f.read(RECORD.size))
        if kind == b"E":
            return
        if kind not in (b"D", b"Z"):
            raise click.ClickException(f"{path}: unknown record {kind!r}")
        yield Piece(offset, length, kind == b"D"), f.read(length) if kind == b"D" else None
