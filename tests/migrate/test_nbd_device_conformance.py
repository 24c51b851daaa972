"""NbdDevice passes check_block_device against real servers: ovis serve, qemu-nbd, nbdkit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.block._nbd import NbdDevice
from ovis.block.testing import check_block_device
from ovis.nbd._constants import TransmissionFlag as TF
from tests.conftest import Served

from .helpers import external_server


def _check(uri: str, *, writable: bool = True) -> None:
    async def factory() -> NbdDevice:
        return await NbdDevice.open(uri)

    asyncio.run(check_block_device(factory, writable=writable))


def test_against_ovis_serve(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--name", "disk", "--port", "0")
    _check(served.uri("disk"))


def test_against_ovis_serve_readonly(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--name", "disk", "--port", "0", "--readonly")
    _check(served.uri("disk"), writable=False)


def test_against_qemu_nbd(image: Path) -> None:
    with external_server("qemu-nbd", image) as uri:
        _check(uri)


def test_against_nbdkit_memory() -> None:
    with external_server("nbdkit") as uri:
        _check(uri)


@pytest.mark.parametrize("kind", ["qemu-nbd", "nbdkit"])
def test_capabilities_follow_the_export_flags(kind: str, image: Path) -> None:
    async def main(uri: str) -> None:
        device = await NbdDevice.open(uri)
        try:
            caps, client = device.capabilities, device.client
            assert caps.can_write == (not client.has(TF.READ_ONLY))
            assert caps.can_trim == client.has(TF.SEND_TRIM)
            assert caps.can_fast_zero == client.has(TF.SEND_FAST_ZERO)
            assert caps.can_extents, "both servers offer base:allocation"
            assert device.size == 64 * 1024 * 1024
        finally:
            await device.aclose()
            await device.aclose()  # idempotent

    with external_server(kind, image) as uri:
        asyncio.run(main(uri))
