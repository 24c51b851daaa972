"""Errors of the volume library, in one tree (as httpx draws its own).

```
VolumeError               base; str() is a one-line message for people
├── VolumeNotFound        no volume or snapshot by that name (and tag)
├── VolumeExists          the name, or the name@tag, is taken
├── InvalidVolumeArgument a bad name, tag, spec or size (also a ValueError)
├── SnapshotReadOnly      a snapshot cannot be written, resized or rolled
├── NotASnapshot          the operation needs a snapshot (clone, rollback target)
├── VolumeInUse           the volume is open and the operation needs it closed
├── DataBeyondSize        shrinking would drop written data (force=True allows it)
└── VolumeIOError         the object store failed underneath (its BlockError
                          is the __cause__)
```

I/O on an open volume is a BlockDevice's business and raises BlockError;
these errors come from the management calls of `VolumeLibrary`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ovis.block._device import BlockError


class VolumeError(Exception):
    """Base of every error the volume library raises on purpose."""


class VolumeNotFound(VolumeError):
    """No volume or snapshot by that name (and tag)."""


class VolumeExists(VolumeError):
    """The name, or name@tag, is taken."""


class InvalidVolumeArgument(VolumeError, ValueError):
    """A bad name, tag, spec or size."""


class SnapshotReadOnly(VolumeError):
    """Snapshots are immutable."""


class NotASnapshot(VolumeError):
    """The operation needs a snapshot, and was given a working volume."""


class VolumeInUse(VolumeError):
    """The volume is open, and the operation needs it closed."""


class DataBeyondSize(VolumeError):
    """Shrinking would drop written data; pass force=True to drop it."""


class VolumeIOError(VolumeError):
    """The object store failed under a management operation."""


@contextlib.contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Translate the store's BlockError into VolumeIOError at the library's boundary."""
    try:
        yield
    except BlockError as exc:
        raise VolumeIOError(f"{what}: {exc}") from exc
