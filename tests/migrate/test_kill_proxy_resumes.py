"""The proxy server is killed (-9) during the background fill and started again.

The new process resumes from the bitmap file: it fetches exactly the blocks
the file does not mark as cached (none twice), and the finished cache equals
the source, so every block the old process marked had its data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Served

from .helpers import MiB
from .live import control, proxy_status, random_image, wait_until

SIZE = 32 * MiB
BLOCK = 64 * 1024
BLOCKS = SIZE // BLOCK


def persisted_blocks(bitmap: Path) -> int:
    """Bits set in a bitmap file (after its 4 KiB header)."""
    return sum(bin(byte).count("1") for byte in bitmap.read_bytes()[4096:])


def test_proxy_killed_during_fill_resumes_from_bitmap(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    image = random_image(tmp_path / "src.img", SIZE, 2)
    source = serve(str(image), "--name", "disk")
    cache, bitmap = tmp_path / "cache.img", tmp_path / "cache.bitmap"
    args = ("--proxy", source.uri("disk"), "--cache", str(cache), "--bitmap", str(bitmap))
    proxy = serve(*args, "--name", "disk", "--max-rate", "8M")
    # Past the first bitmap sync (every second) and about a third of the way.
    wait_until(
        "a third of the fill",
        lambda: persisted_blocks(bitmap) > 0 and proxy_status(proxy)["cached_blocks"] > BLOCKS // 3,
    )
    proxy.proc.kill()
    proxy.proc.wait()
    persisted = persisted_blocks(bitmap)
    assert 0 < persisted < BLOCKS

    again = serve(*args, "--name", "disk")
    status = wait_until("the fill to complete", lambda: _complete(again), timeout=20)
    assert isinstance(status, dict)
    assert status["cached_blocks"] == BLOCKS
    # Nothing the bitmap file marked was fetched again, and nothing twice.
    assert status["fetched_bytes"] + status["zeroed_bytes"] == (BLOCKS - persisted) * BLOCK
    assert control(again, "migrate-switch")["proxy"]["switched"]
    assert again.stop() == 0
    assert cache.read_bytes() == image.read_bytes()
    assert persisted_blocks(bitmap) == BLOCKS


def _complete(served: Served) -> dict[str, object] | None:
    status = proxy_status(served)
    return status if status["complete"] and not status["filling"] else None
