"""NbdDevice turns remote error replies and a lost connection into BlockError."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.block import BlockError
from ovis.block._nbd import NbdDevice
from ovis.nbd._constants import Errno
from tests.conftest import Served


def test_remote_errors_keep_their_errno_and_a_lost_connection_is_eio(
    serve: Callable[..., Served], image: Path
) -> None:
    served = serve(str(image), "--name", "disk", "--port", "0", "--readonly")

    async def main() -> None:
        device = await NbdDevice.open(served.uri("disk"))
        assert not device.capabilities.can_write
        with pytest.raises(BlockError) as refused:
            await device.write(0, b"x" * 512)  # past the checks: the server answers
        assert refused.value.errno == Errno.EPERM
        served.stop()
        with pytest.raises(BlockError) as lost:
            await device.read(0, 512)
        assert lost.value.errno == Errno.EIO
        await device.aclose()

    asyncio.run(main())
