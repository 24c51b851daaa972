"""`ovis serve --proxy --defer-fill`: nothing is copied until `ovis migrate fill`.

So the proxy can serve on the destination host before the source is frozen
(the VM still running there): only blocks read on demand are fetched, and
the fill starts on command once the source no longer changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from ovis.nbd.client import NbdClient
from tests.conftest import Served

from .helpers import MiB
from .live import Processes, migrate, proxy_status, random_image, wait_until

SIZE = 8 * MiB


def test_fill_waits_for_the_command(
    serve: Callable[..., Served], processes: Processes, tmp_path: Path
) -> None:
    image = random_image(tmp_path / "src.img", SIZE, 8)
    data = image.read_bytes()
    source, _ = processes.qemu_nbd(image)
    cache, bitmap = tmp_path / "cache.img", tmp_path / "cache.bitmap"
    proxy = serve(
        *("--proxy", source, "--cache", str(cache), "--bitmap", str(bitmap)),
        *("--name", "disk", "--defer-fill"),
    )

    async def read() -> bytes:
        client = await NbdClient.connect(proxy.uri("disk"))
        got = await client.read(MiB, 4096)
        await client.aclose()
        return got

    assert asyncio.run(read()) == data[MiB : MiB + 4096]
    time.sleep(0.3)
    status = proxy_status(proxy)
    assert not status["filling"] and status["cached_blocks"] == 1  # only the block read
    assert migrate(proxy, "fill", "disk")["proxy"]["filling"] in (True, False)
    wait_until("the fill to complete", lambda: proxy_status(proxy)["complete"])
    assert proxy.stop() == 0
    assert cache.read_bytes() == data
