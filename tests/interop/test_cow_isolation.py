"""--cow: each connection writes to its own throw-away overlay; the base never changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need

from ._support import (
    KiB,
    MiB,
    export_info,
    nbdinfo_map,
    nbdsh,
    python3_nbd,
    qemu_image,
    qemu_img_map,
    qemu_io,
    sha256_file,
)

pytestmark = pytest.mark.interop

TWO_CONNECTIONS = """
import sys, nbd

def connect():
    h = nbd.NBD()
    h.connect_uri(sys.argv[1])
    return h

a, b = connect(), connect()
pattern = bytes(range(256)) * 16
a.pwrite(b"A" * 65536, 8 << 20)
a.flush()
assert a.pread(65536, 8 << 20) == b"A" * 65536          # visible on its connection
assert b.pread(65536, 8 << 20) == bytes(65536)          # not on another
b.pwrite(b"B" * 100, (8 << 20) + 10)
assert a.pread(65536, 8 << 20) == b"A" * 65536
assert b.pread(200, 8 << 20) == bytes(10) + b"B" * 100 + bytes(90)
a.pwrite(b"!" * 10, 65536 - 5)                          # straddles a cow block in the base's data
assert a.pread(4096, 0) == pattern[:4096]
assert a.pread(20, 65536 - 10) == pattern[-10:-5] + b"!" * 10 + pattern[5:10]
assert b.pread(4096, 65536 - 2048) == pattern[-2048:] + pattern[:2048]
a.shutdown()
b.shutdown()
c = connect()                                           # a new connection: the base again
assert c.pread(65536, 8 << 20) == bytes(65536)
assert c.pread(4096, 65536 - 2048) == pattern[-2048:] + pattern[:2048]
"""


@pytest.fixture
def cow(serve: Callable[..., Served], image: Path) -> Served:
    return serve(str(image), "--name", "disk", "--port", "0", "--cow")


def test_connections_do_not_see_each_others_writes(cow: Served, image: Path) -> None:
    need("nbdsh")
    before = sha256_file(image)
    python3_nbd(TWO_CONNECTIONS, cow.uri("disk"))
    assert sha256_file(image) == before


def test_qemu_io_round_trip_leaves_base_untouched(cow: Served, image: Path) -> None:
    need("qemu-io", "nbdinfo")
    before = sha256_file(image)
    assert export_info(cow.uri("disk"))["can_multi_conn"] is False
    qemu_io(
        qemu_image(cow.uri("disk")),
        "write -P 0xab 0 1M",
        "write -z 62M 64k",
        f"discard {62 * MiB + 64 * KiB} 64k",
        "read -P 0xab 0 1M",
        "read -P 0 62M 128k",
        "flush",
    )
    assert sha256_file(image) == before


def test_block_status_of_overlay_writes(cow: Served) -> None:
    need("nbdsh")
    nbdsh(
        cow.uri("disk"),
        """
        h.pwrite(b"\\x5c" * 4096, 30 << 20)             # data into a hole of the base
        h.zero(65536, 0)                                # zeros over the base's data
        seen = []
        def extents(context, offset, entries, err):
            pos = offset
            for i in range(0, len(entries), 2):
                seen.append((pos, entries[i], entries[i + 1]))
                pos += entries[i]
        def flags_at(offset):
            for start, length, flags in seen:
                if start <= offset < start + length:
                    return flags
            raise AssertionError(offset)
        for offset in (0, 65536, 30 << 20, 20 << 20):
            seen.clear()
            h.block_status(1 << 20, offset, extents)
            assert seen and seen[0][0] == offset
        for offset in (65536, 30 << 20):
            seen.clear()
            h.block_status(4096, offset, extents)
            assert not flags_at(offset) & nbd.STATE_HOLE, (offset, seen)
        seen.clear()
        h.block_status(65536, 0, extents)
        assert flags_at(0) & nbd.STATE_ZERO or h.pread(65536, 0) == bytes(65536)
        assert h.pread(65536, 0) == bytes(65536)
        assert h.pread(4096, 30 << 20) == b"\\x5c" * 4096
        """,
    )


def test_a_fresh_connection_maps_like_the_base(cow: Served, image: Path) -> None:
    need("qemu-img", "nbdinfo")
    base_map = qemu_img_map(["-f", "raw", str(image)])
    assert qemu_img_map(qemu_image(cow.uri("disk"))) == base_map
    assert nbdinfo_map(cow.uri("disk")) == base_map
