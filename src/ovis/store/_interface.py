"""The ObjectStore contract: what the volume layer needs from storage.

A store holds objects: byte strings of at most `MAX_OBJECT_SIZE` bytes, each
named by a 64-bit object id (oid) and carrying a 64-bit version.  It does not
interpret oids; the volume layer owns their layout (ovis.volume._oid).  The
local store keeps one file per object; a replicated store will send the same
calls to several nodes.  Either plugs in under the volume layer unchanged.

Failure: every operation either completes or raises `BlockError`, whose
`errno` is what an NBD client would be told.  The subclasses below name the
cases a caller may want to handle.  Invalid arguments (a negative offset, a
range past `MAX_OBJECT_SIZE`, a version outside u64) are the caller's bug and
raise `ValueError`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Collection

from ovis.block._device import BlockError, Buffer
from ovis.nbd._constants import Errno

MAX_OBJECT_SIZE = 64 * 1024 * 1024
MAX_VERSION = (1 << 64) - 1


class ObjectNotFound(BlockError):
    """The object does not exist (never created, or removed)."""

    def __init__(self, oid: int) -> None:
        super().__init__(Errno.EIO, f"object {oid:016x} does not exist")
        self.oid = oid


class StaleVersion(BlockError):
    """A mutation carried a version older than the one the object holds."""

    def __init__(self, oid: int, version: int, current: int) -> None:
        super().__init__(
            Errno.EIO, f"object {oid:016x}: version {version} is older than stored {current}"
        )
        self.oid = oid
        self.version = version
        self.current = current


class ChecksumError(BlockError):
    """Stored bytes no longer match their checksum: the data is not returned."""

    def __init__(self, oid: int, detail: str) -> None:
        super().__init__(Errno.EIO, f"object {oid:016x}: checksum mismatch ({detail})")
        self.oid = oid


class StoreClosed(BlockError):
    """The store was closed with `aclose`."""

    def __init__(self) -> None:
        super().__init__(Errno.ESHUTDOWN, "object store is closed")


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectStat:
    """An object's version and length (one past its last byte ever written)."""

    version: int
    length: int


class ObjectStore(abc.ABC):
    """Named, versioned, checksummed objects.

    Contract for implementers (`ovis.store.testing.check_object_store` tests it):

    - Objects are sparse: bytes never written read as zeros, up to
      `MAX_OBJECT_SIZE`, also past `length`.
    - Versions: every mutation carries a version, a u64 that the single
      writer of the object makes monotonic.  A mutation whose version is
      *older* than the stored one raises `StaleVersion` and changes nothing;
      an equal version is accepted so that a retried request is idempotent.
      The stored version becomes the mutation's version.
    - Durability: a mutation is visible to every later call once it returns,
      and durable once a later `sync` covering its oid returns.  After a
      crash, an object not synced since its last mutation may be found in
      any state it held since its last sync (create_and_write and remove are
      atomic, so such an object is whole: old or new).
    - Integrity: data that no longer matches its checksum raises
      `ChecksumError` (EIO); corrupt bytes are never returned.
    - Concurrency: calls may run concurrently.  Mutations of one object are
      applied one at a time; a read concurrent with a mutation of the same
      object returns the object before or after it.
    - `aclose` is idempotent and releases resources even if it fails; any
      other call afterwards raises `StoreClosed`.
    """

    @abc.abstractmethod
    async def read(self, oid: int, offset: int, length: int) -> Buffer:
        """Return exactly `length` bytes of `oid` from `offset`.

        Raises ObjectNotFound, ChecksumError.
        """

    @abc.abstractmethod
    async def write(self, oid: int, offset: int, data: Buffer, version: int) -> None:
        """Write `data` into the existing object `oid` at `offset`.

        The object's length grows to cover the write.  Raises ObjectNotFound
        (use create_and_write to make an object), StaleVersion, and
        ChecksumError if a partially overwritten checksum block was corrupt.
        """

    @abc.abstractmethod
    async def create_and_write(self, oid: int, data: Buffer, version: int) -> None:
        """Make `oid` hold exactly `data`, atomically, creating or replacing it.

        Readers and a crash see the old object (or none) or the new one,
        never a mixture.  Raises StaleVersion if an existing object is newer.
        """

    @abc.abstractmethod
    async def remove(self, oid: int) -> None:
        """Delete `oid`.  Removing a missing object is not an error.

        Removal is idempotent so that an interrupted garbage collection can
        simply be run again.
        """

    @abc.abstractmethod
    async def stat(self, oid: int) -> ObjectStat:
        """Return the object's version and length.  Raises ObjectNotFound."""

    @abc.abstractmethod
    async def list(self) -> list[int]:
        """Return every oid in the store, sorted.

        The list is complete or the call fails: a partial list is never
        returned, since garbage collection and recovery act on it.
        """

    @abc.abstractmethod
    async def sync(self, oids: Collection[int] | None = None) -> None:
        """Make every mutation of `oids` (all objects if None) that has returned durable.

        Oids that do not exist are ignored: their removal is made durable.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Sync everything and release resources; idempotent; closes even if it fails."""

    async def version(self, oid: int) -> int:
        """Return the object's version.  Raises ObjectNotFound."""
        return (await self.stat(oid)).version

    async def exists(self, oid: int) -> bool:
        """Whether `oid` exists."""
        try:
            await self.stat(oid)
        except ObjectNotFound:
            return False
        return True


def check_range(offset: int, length: int) -> None:
    """Raise ValueError unless [offset, offset+length) lies inside an object."""
    if offset < 0 or length < 0 or offset + length > MAX_OBJECT_SIZE:
        raise ValueError(
            f"range [{offset}, {offset + length}) is outside an object "
            f"(at most {MAX_OBJECT_SIZE} bytes)"
        )


def check_version(version: int) -> None:
    """Raise ValueError unless `version` is a u64."""
    if not 0 <= version <= MAX_VERSION:
        raise ValueError(f"version {version} is not a u64")


def check_oid(oid: int) -> None:
    """Raise ValueError unless `oid` is a u64."""
    if not 0 <= oid <= MAX_VERSION:
        raise ValueError(f"object id {oid} is not a u64")
