"""The proxy's source is killed mid-fill; `ovis migrate reconnect` to a new source resumes.

While the source is gone: cached blocks keep working, reads of uncached
blocks (and partial writes over them) get EIO, block status still answers,
and `status` says what failed.  Reconnecting to another server of the same
disk (here a qemu-nbd on the source image) resumes the fill; a server of
another disk is refused.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd.client import NbdClient, NbdError
from ovis.serve import ControlError
from tests.conftest import Served

from .helpers import MiB
from .live import Processes, control, migrate, ovis_cli, proxy_status, random_image, wait_until

SIZE = 16 * MiB


async def expect_eio(request: object) -> None:
    with pytest.raises(NbdError) as caught:
        await request  # type: ignore[misc]
    assert caught.value.errno == errno.EIO


def test_source_killed_then_reconnect(
    serve: Callable[..., Served], processes: Processes, tmp_path: Path
) -> None:
    image = random_image(tmp_path / "src.img", SIZE, 1)
    data = image.read_bytes()
    source = serve(str(image), "--name", "disk")
    cache, bitmap = tmp_path / "cache.img", tmp_path / "cache.bitmap"
    proxy = serve(
        *("--proxy", source.uri("disk"), "--cache", str(cache), "--bitmap", str(bitmap)),
        *("--name", "disk", "--max-rate", "2M"),
    )
    mine = b"\x5a" * (64 * 1024)

    async def before() -> None:
        client = await NbdClient.connect(proxy.uri("disk"))
        assert await client.read(8 * MiB, 4096) == data[8 * MiB : 8 * MiB + 4096]  # on demand
        await client.write(12 * MiB, mine)  # a whole proxy block: no fetch needed
        await client.flush()
        await client.aclose()

    asyncio.run(before())
    source.proc.kill()
    source.proc.wait()

    async def while_gone() -> None:
        client = await NbdClient.connect(proxy.uri("disk"))
        assert await client.read(8 * MiB, 64 * 1024) == data[8 * MiB : 8 * MiB + 64 * 1024]
        assert await client.read(12 * MiB, len(mine)) == mine
        await expect_eio(client.read(14 * MiB, 4096))  # never cached
        await expect_eio(client.write(15 * MiB + 512, b"x" * 512))  # needs a fetch first
        extents = await client.block_status(14 * MiB, MiB)
        assert extents and sum(n for n, _ in extents) > 0
        await client.aclose()

    asyncio.run(while_gone())
    status = wait_until("the fill to stop", lambda: _stopped(proxy))
    assert isinstance(status, dict)
    assert status["source_error"] and not status["complete"]
    text = ovis_cli(proxy, "migrate", "status", "disk").stdout
    assert "source error" in text and "ovis migrate reconnect" in text

    # The old address is dead; another disk is refused; the same disk elsewhere resumes.
    with pytest.raises(ControlError, match="cannot reconnect 'disk' to nbd://"):
        control(proxy, "migrate-reconnect", source=None)  # the old address: refused
    small = tmp_path / "small.img"
    small.write_bytes(b"")
    with open(small, "r+b") as f:
        f.truncate(SIZE // 2)
    other, _ = processes.qemu_nbd(small)
    with pytest.raises(ControlError, match=f"has {SIZE // 2} bytes, not {SIZE}"):
        control(proxy, "migrate-reconnect", source=other)
    restarted, _ = processes.qemu_nbd(image)
    status = migrate(proxy, "reconnect", "disk", restarted)["proxy"]
    assert isinstance(status, dict)
    assert status["source"] == restarted and status["source_error"] is None
    assert status["filling"] and status["fill_error"] is None

    async def after() -> None:
        client = await NbdClient.connect(proxy.uri("disk"))
        assert await client.read(14 * MiB, 4096) == data[14 * MiB : 14 * MiB + 4096]
        await client.aclose()

    asyncio.run(after())
    control(proxy, "migrate-rate", max_rate=None)  # no limit now: finish the test quickly
    wait_until("the fill to complete", lambda: proxy_status(proxy)["complete"], timeout=20)
    assert control(proxy, "migrate-switch")["proxy"]["switched"]
    assert proxy.stop() == 0
    expected = bytearray(data)
    expected[12 * MiB : 12 * MiB + len(mine)] = mine
    assert cache.read_bytes() == bytes(expected)


def _stopped(proxy: Served) -> dict[str, object] | None:
    status = proxy_status(proxy)
    return status if status["fill_error"] and not status["filling"] else None
