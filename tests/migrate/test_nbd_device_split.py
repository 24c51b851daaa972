"""NbdDevice splits requests larger than the remote's maximum block size."""

from __future__ import annotations

import asyncio

from ovis.block._nbd import NbdDevice

from .helpers import MiB, external_server, pattern


def test_large_requests_are_split_to_the_remote_maximum() -> None:
    # The policy filter advertises a 64 KiB maximum and fails anything larger.
    policy = ("blocksize-maximum=65536", "blocksize-error-policy=error")

    async def main(uri: str) -> None:
        device = await NbdDevice.open(uri)
        try:
            assert device.capabilities.max_block == 32 * MiB  # ours, not the remote's
            data = pattern(3 * MiB + 4096, 1)
            await device.write(4096, data, fua=True)
            assert await device.read(4096, len(data)) == data
        finally:
            await device.aclose()

    with external_server("nbdkit", None, "--filter=blocksize-policy", params=policy) as uri:
        asyncio.run(main(uri))
