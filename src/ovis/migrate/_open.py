"""Factories the CLI calls: a proxy from a URI and two paths, a mirror to a URI.

Why here and not in the CLI: `ovis serve --proxy` and `ovis migrate start`
should only parse arguments; opening the parts in the right order, and
closing what was opened when a later step fails, belongs with the library.
"""

from __future__ import annotations

import os
import ssl

from ovis.block._file import FileDevice
from ovis.block._nbd import NbdDevice

from ._bitmap import PersistentBitmap
from ._mirror import MirrorJob
from ._mirror_filter import MirrorFilter
from ._proxy import ProxyFilter


async def open_proxy(
    source_uri: str,
    cache_path: str | os.PathLike[str],
    bitmap_path: str | os.PathLike[str],
    *,
    block_size: int = 64 * 1024,
    max_rate: float | None = None,
    auto_switch: bool = False,
    max_in_flight: int = 8,
    tag: bytes = b"",
    tls: ssl.SSLContext | None = None,
) -> ProxyFilter:
    """Connect to the source and open (or create) the cache and the bitmap.

    A missing cache file is created sparse at the source's size, a shorter
    one is extended; a longer one is refused (ValueError), as is a bitmap
    for another disk, block size or `tag`, a file that is not a bitmap, and
    a bitmap with blocks cached beside a new or truncated cache.  An
    existing bitmap resumes where it stopped.  The fill is not started:
    call `start_fill()` once the source will no longer change (xnbd: after
    the VM has moved).  Raises OSError / ValueError / BlockError (or the
    NBD client's ProtocolError / NbdError) with nothing left open, and no
    bitmap file left behind unless there was one before.
    """
    source = await NbdDevice.open(source_uri, tls=tls)
    try:
        size = source.size
        existed = os.path.exists(bitmap_path)
        bitmap = PersistentBitmap.open(bitmap_path, block_size=block_size, disk_size=size, tag=tag)
        try:
            _size_cache(cache_path, size, bitmap)
            cache = FileDevice(cache_path)
            try:
                return ProxyFilter(
                    source,
                    cache,
                    bitmap,
                    block_size=block_size,
                    max_rate=max_rate,
                    max_in_flight=max_in_flight,
                    auto_switch=auto_switch,
                )
            except BaseException:
                await cache.aclose()
                raise
        except BaseException:
            bitmap.close()
            if not existed:
                os.unlink(bitmap_path)
            raise
    except BaseException:
        await source.aclose()
        raise


def _size_cache(path: str | os.PathLike[str], size: int, bitmap: PersistentBitmap) -> None:
    """Create or extend the cache to `size` bytes; refuse one that is not the bitmap's."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        current = os.fstat(fd).st_size
        if current > size:
            raise ValueError(
                f"cache {os.fsdecode(path)} is {current} bytes, larger than the "
                f"{size}-byte source: it belongs to another disk"
            )
        if current < size:
            # A cache is sized when its bitmap is created, so a short one with
            # blocks marked cached is not the one the bitmap describes.
            if bitmap.count:
                raise ValueError(
                    f"bitmap {bitmap.path} marks {bitmap.count} blocks as cached, but cache "
                    f"{os.fsdecode(path)} is new or truncated: use the cache it belongs "
                    "to, or delete the bitmap to start over"
                )
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


async def reconnect_proxy(
    proxy: ProxyFilter, source_uri: str, *, tls: ssl.SSLContext | None = None
) -> None:
    """Connect to `source_uri` and make it `proxy`'s source (xnbd-bgctl --reconnect).

    Raises OSError / ProtocolError / NbdError (cannot connect), ValueError
    (another disk) or MigrationError (switched), with the new connection closed.
    """
    source = await NbdDevice.open(source_uri, tls=tls)
    try:
        await proxy.reconnect(source)
    except BaseException:
        await source.aclose()
        raise


async def start_mirror(
    filter: MirrorFilter,
    destination_uri: str,
    *,
    granularity: int = 64 * 1024,
    max_rate: float | None = None,
    dirty_threshold: int = 1024 * 1024,
    max_iterations: int = 10,
    tls: ssl.SSLContext | None = None,
) -> MirrorJob:
    """Connect to the destination export and start mirroring `filter`'s source to it.

    The job owns the connection and closes it when it ends.  Raises
    OSError / ValueError / MigrationError (a job already attached) with the
    connection closed.
    """
    destination = await NbdDevice.open(destination_uri, tls=tls)
    try:
        job = MirrorJob(
            filter,
            destination,
            granularity=granularity,
            max_rate=max_rate,
            dirty_threshold=dirty_threshold,
            max_iterations=max_iterations,
            close_destination=True,
        )
        await job.start()
    except BaseException:
        await destination.aclose()
        raise
    return job
