"""qemu-io's commands over NBD: patterns, unaligned I/O, zeroes, discard, aio, FUA.

Each test reads back what it wrote with `read -P`, which fails on the first
byte that differs, and checks the neighbours of every change stayed intact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need

from ._support import PATTERN_MIB, KiB, MiB, qemu_image, qemu_io, read_at

pytestmark = pytest.mark.interop


@pytest.fixture
def disk(serve: Callable[..., Served], image: Path) -> list[str]:
    need("qemu-io")
    served = serve(str(image), "--name", "disk", "--port", "0")
    return qemu_image(served.uri("disk"))


def test_pattern_write_then_verified_read(disk: list[str], image: Path) -> None:
    qemu_io(disk, "write -P 0xab 0 1M", "read -P 0xab 0 1M")
    qemu_io(disk, "read -P 0xab 0 1M", "read -P 0 1M 1M")  # a new connection
    assert read_at(image, 0, MiB) == b"\xab" * MiB


def test_pattern_read_detects_the_wrong_bytes(disk: list[str]) -> None:
    # The image's first MiB is 0, 1, 2, ...: a read claiming 0xab must fail.
    result = qemu_io(disk, "read -P 0xab 0 4k", check=False)
    assert "Pattern verification failed" in result.stdout + result.stderr


def test_unaligned_writes_keep_their_neighbours(disk: list[str], image: Path) -> None:
    base = 8 * MiB
    qemu_io(
        disk,
        f"write -P 0x11 {base + 1000} 3000",
        f"write -P 0x22 {base + 4095} 2",  # straddles a 4 KiB boundary
        f"write -P 0x33 {base + 70000} 1",
        f"read -P 0 {base} 1000",
        f"read -P 0x11 {base + 1000} 3000",
        f"read -P 0 {base + 4000} 95",
        f"read -P 0x22 {base + 4095} 2",
        f"read -P 0 {base + 4097} {70000 - 4097}",
        f"read -P 0x33 {base + 70000} 1",
        f"read -P 0 {base + 70001} 1000",
    )
    # Unaligned writes into the patterned first MiB, too.
    qemu_io(disk, "write -P 0x44 333 777")
    expected = bytearray(PATTERN_MIB[:4096])
    expected[333:1110] = b"\x44" * 777
    assert read_at(image, 0, 4096) == expected


def test_write_zeroes_and_neighbours(disk: list[str]) -> None:
    base, end = 4 * MiB, 5 * MiB
    qemu_io(
        disk,
        f"write -P 0x55 {base} 1M",
        f"write -z {base + 4 * KiB} 8k",  # NO_HOLE: must read back as zeros
        f"write -z -u {base + 64 * KiB} 64k",  # may punch a hole
        f"write -z {base + 200000} 5",  # unaligned
        f"read -P 0x55 {base} 4k",
        f"read -P 0 {base + 4 * KiB} 8k",
        f"read -P 0x55 {base + 12 * KiB} 52k",
        f"read -P 0 {base + 64 * KiB} 64k",
        f"read -P 0x55 {base + 128 * KiB} {200000 - 128 * KiB}",
        f"read -P 0 {base + 200000} 5",
        f"read -P 0x55 {base + 200005} {end - base - 200005}",
    )


def test_discard_keeps_its_neighbours(disk: list[str]) -> None:
    base = 12 * MiB
    qemu_io(
        disk,
        f"write -P 0x66 {base} 1M",
        f"discard {base + 64 * KiB} 128k",
        f"discard {base + 300000} 3333",  # unaligned: may round inward, never outward
        f"read -P 0x66 {base} 64k",
        f"read -P 0x66 {base + 192 * KiB} 64k",
        f"read -P 0x66 {base + 290000} 10000",
        f"read -P 0x66 {base + 303333} 10000",
    )


def test_aio_requests_pipelined(disk: list[str]) -> None:
    writes = [f"aio_write -P {0x70 + i} {16 + i}M 256k" for i in range(8)]
    reads = [f"aio_read -P {0x70 + i} {16 + i}M 256k" for i in range(8)]
    overlapping = [f"aio_read -P {0x70 + i} {(16 + i) * MiB + 64 * KiB} 64k" for i in range(8)]
    qemu_io(disk, *writes, "aio_flush", *reads, *overlapping, "aio_flush")
    qemu_io(disk, *reads, "aio_flush")  # durable and visible to a new connection


def test_fua_writes(disk: list[str], image: Path) -> None:
    qemu_io(disk, "write -f -P 0x5a 20M 64k", "read -P 0x5a 20M 64k", "flush")
    # FUA: on disk once acknowledged, which for us means in the image file.
    assert read_at(image, 20 * MiB, 65536) == b"\x5a" * 65536
