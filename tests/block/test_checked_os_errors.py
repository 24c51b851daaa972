"""An OSError escaping a device reaches the client as the NBD errno the spec asks for."""

from __future__ import annotations

import asyncio
import errno

import pytest

from ovis.block import BlockError, CheckedDevice, MemoryDevice
from ovis.nbd._constants import Errno

from .devices import RaisesOSError, ShortRead


@pytest.mark.parametrize(
    ("host_errno", "nbd_errno"),
    [
        (errno.ENOSPC, Errno.ENOSPC),
        (errno.EDQUOT, Errno.ENOSPC),
        (errno.EFBIG, Errno.ENOSPC),
        (errno.EIO, Errno.EIO),
        (errno.EACCES, Errno.EPERM),
        (errno.EROFS, Errno.EPERM),
    ],
)
def test_os_error_is_translated(host_errno: int, nbd_errno: Errno) -> None:
    async def scenario() -> None:
        device = CheckedDevice(RaisesOSError(MemoryDevice(4096), OSError(host_errno, "host")))
        for op in (lambda: device.read(0, 1), lambda: device.write(0, b"x"), device.flush):
            with pytest.raises(BlockError) as info:
                await op()
            assert info.value.errno == nbd_errno
            assert isinstance(info.value.__cause__, OSError)

    asyncio.run(scenario())


def test_short_read_is_eio() -> None:
    async def scenario() -> None:
        device = CheckedDevice(ShortRead(MemoryDevice(4096)))
        with pytest.raises(BlockError) as info:
            await device.read(0, 100)
        assert info.value.errno == Errno.EIO

    asyncio.run(scenario())
