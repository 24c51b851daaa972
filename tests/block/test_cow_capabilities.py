"""CowFilter makes any base writable but never multi-conn, and checks its block size."""

from __future__ import annotations

import pytest

from ovis.block import CowFilter, MemoryDevice, ReadOnlyFilter

MiB = 1024 * 1024


def test_writable_over_a_read_only_base_and_not_multi_conn() -> None:
    caps = CowFilter(ReadOnlyFilter(MemoryDevice(MiB))).capabilities
    assert caps.can_write and caps.can_trim and caps.can_zero and caps.can_fast_zero
    assert caps.can_flush and caps.can_fua and caps.can_extents
    # Each connection has its own overlay: a write on one is not seen on another.
    assert not caps.can_multi_conn
    assert caps.preferred_block == 64 * 1024


@pytest.mark.parametrize("block_size", [0, 2048, 5000, 64 * MiB])
def test_bad_block_sizes_are_refused(block_size: int) -> None:
    with pytest.raises(ValueError, match="block_size"):
        CowFilter(MemoryDevice(MiB, max_block=32 * MiB), block_size=block_size)
