"""ReadOnlyFilter: export a device without letting anyone change it.

Why a filter rather than a flag on each backend: any device (a file, a
remote export, a volume snapshot) can be served read-only the same way, and a
cow overlay stacked on top gives the classic "writable throw-away view of a
read-only base" without the base ever being opened for writes above here.

It clears can_write, can_trim, can_zero and can_fast_zero, so the checked
wrapper answers EPERM before a request gets here; the mutating calls raise
EPERM themselves as well, for callers that stack filters without a
CheckedDevice in between (the cow filter, for one, calls `next` directly).
"""

from __future__ import annotations

import dataclasses

from ovis.block._device import BlockDevice, BlockError, Buffer, Capabilities, Transparent
from ovis.nbd._constants import Errno


class ReadOnlyFilter(Transparent):
    """`next` with every way of writing to it refused with EPERM."""

    def __init__(self, next: BlockDevice) -> None:
        super().__init__(next)
        self._caps = dataclasses.replace(
            next.capabilities,
            can_write=False,
            can_trim=False,
            can_zero=False,
            can_fast_zero=False,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def passes(self, write: bool) -> bool:
        return not write

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        raise BlockError(Errno.EPERM, "device is read-only")

    async def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        raise BlockError(Errno.EPERM, "device is read-only")

    async def zero(
        self,
        offset: int,
        length: int,
        *,
        may_trim: bool = False,
        fast: bool = False,
        fua: bool = False,
    ) -> None:
        raise BlockError(Errno.EPERM, "device is read-only")
