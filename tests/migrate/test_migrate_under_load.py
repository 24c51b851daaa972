"""Migrate a 256 MiB export while fio writes to it, with ovis and qemu-nbd on the other side.

fio (nbd engine) writes random 4 KiB blocks (4096 at 2000 IOPS to the
mirror's source, 1024 at 500 IOPS to the proxy), each with a crc32c verify
header, and then reads them back to verify.  Each test takes 7-10 s on
two vCPUs; OVIS_LOAD_MIB=64 runs them on 64 MiB in about half that, with
the same paths exercised (fill or passes racing the writes, the final
pause, write-through).

- Mirror: the job starts while fio writes to the source; once fio is done
  (the VM is paused) `complete` makes the destination authoritative.  Then
  fio --verify_only passes on the destination and qemu-img compare finds
  the destination equal to the source.
- Proxy: fio writes to the proxy while the background fill runs (4 KiB
  writes are partial 64 KiB proxy blocks: read-modify-write from the
  source).  After the fill and the switch, fio --verify_only passes from the
  cache alone, and the cache equals the source with exactly fio's blocks
  replaced (qemu-img compare against that expected image); the source is
  unchanged.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served

from .helpers import MiB
from .live import (
    Processes,
    control,
    finish,
    fio,
    proxy_status,
    qemu_img_compare,
    random_image,
    wait_until,
    written_blocks,
)

MIB = int(os.environ.get("OVIS_LOAD_MIB", "256"))
SIZE = MIB * MiB
LOAD = (f"--size={MIB}M", "--io_size=16M", "--rate_iops=,2000")  # ~2 s of 4 KiB writes
# Through the proxy each 4 KiB write fetches its whole 64 KiB block first, so
# fewer writes, or they alone would fetch nearly every block before the fill.
PROXY_LOAD = (f"--size={MIB}M", "--io_size=4M", "--rate_iops=,500")


def _empty(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(SIZE)
    return path


@pytest.mark.parametrize("kind", ["ovis", "qemu-nbd"])
def test_mirror_under_fio(
    kind: str, serve: Callable[..., Served], processes: Processes, tmp_path: Path
) -> None:
    image = random_image(tmp_path / "src.img", SIZE, 5)
    target = _empty(tmp_path / "dst.img")
    source = serve(str(image), "--name", "disk")
    dest_server: Served | None = None
    if kind == "ovis":
        dest_server = serve(str(target), "--name", "disk")
        destination = dest_server.uri("disk")
    else:
        destination, dest_proc = processes.qemu_nbd(target)
    load = fio(source.uri("disk"), *LOAD)
    time.sleep(0.3)  # fio is writing
    control(source, "migrate-start", destination=destination, max_rate=None)
    assert load.poll() is None, "fio finished before the mirror started"
    finish(load)  # fio verified its blocks on the source
    done = control(source, "migrate-complete")
    mirror = done["mirror"]
    assert mirror["state"] == "done" and done["retired"], mirror
    assert mirror["downtime_ms"] is not None and mirror["iterations"] >= 1
    finish(fio(destination, *LOAD, "--verify_only"))
    assert source.stop() == 0
    if dest_server is not None:
        assert dest_server.stop() == 0
    else:
        dest_proc.terminate()
        assert dest_proc.wait(10) == 0
    qemu_img_compare(image, target)


@pytest.mark.parametrize("kind", ["ovis", "qemu-nbd"])
def test_proxy_under_fio(
    kind: str, serve: Callable[..., Served], processes: Processes, tmp_path: Path
) -> None:
    image = random_image(tmp_path / "src.img", SIZE, 6)
    original = hashlib.sha256(image.read_bytes()).hexdigest()
    if kind == "ovis":
        source = serve(str(image), "--name", "disk").uri("disk")
    else:
        source, _ = processes.qemu_nbd(image)
    cache, bitmap, iolog = tmp_path / "cache.img", tmp_path / "cache.bitmap", tmp_path / "io.log"
    proxy = serve(
        *("--proxy", source, "--cache", str(cache), "--bitmap", str(bitmap)),
        *("--name", "disk", "--max-rate", "8M"),  # the fill outlasts fio's writes
    )
    finish(fio(proxy.uri("disk"), *PROXY_LOAD, iolog=iolog))  # verified through the proxy
    assert not proxy_status(proxy)["complete"], "the fill should have outlasted the writes"
    control(proxy, "migrate-rate", max_rate=None)
    wait_until("the fill to complete", lambda: proxy_status(proxy)["complete"], timeout=30)
    assert control(proxy, "migrate-switch")["proxy"]["switched"]
    status = proxy_status(proxy)
    assert status["fetched_bytes"] == SIZE, "every block fetched exactly once"
    finish(fio(proxy.uri("disk"), *PROXY_LOAD, "--verify_only"))  # from the cache alone
    assert proxy.stop() == 0

    expected = bytearray(image.read_bytes())
    written = cache.read_bytes()
    blocks = written_blocks(iolog)
    assert len(blocks) == 1024
    for offset in blocks:  # fio's blocks, checked by its verify: the rest must be the source's
        expected[offset : offset + 4096] = written[offset : offset + 4096]
    (tmp_path / "expected.img").write_bytes(expected)
    qemu_img_compare(tmp_path / "expected.img", cache)
    assert hashlib.sha256(image.read_bytes()).hexdigest() == original, "the source was written"
