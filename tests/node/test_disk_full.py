"""A full disk: writes get ENOSPC, the node keeps serving, and flushed data stays intact.

The data directory lives on a small tmpfs mounted by the test (root only; the
test is skipped where mounting is not allowed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ovis.nbd import Errno
from ovis.nbd.client import NbdError
from tests.conftest import small_tmpfs

from .conftest import Node

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "24M") as mount:
        yield mount


def test_full_disk_gives_enospc_and_keeps_flushed_data(
    start_node: Callable[..., Node], small_disk: Path
) -> None:
    node = start_node(small_disk / "data")
    node.vdi("create", "keep", "8M", "--object-size", "1M")
    node.vdi("create", "big", "64M", "--object-size", "1M")
    kept = bytes(range(256)) * 4096  # 1 MiB, flushed before the disk fills
    node.write("keep", 0, kept)

    with pytest.raises(NbdError) as failure:
        for n in range(64):  # 64 MiB of data into 24 MiB of disk
            node.write("big", n * MiB, bytes([n % 250 + 1]) * MiB)
    assert failure.value.errno == Errno.ENOSPC, "a full disk must read as ENOSPC, not EIO"

    assert node.read("keep", 0, MiB) == kept  # still served, nothing lost
    assert node.proc.poll() is None
    node.vdi("delete", "big")  # making room lets writes succeed again
    node.write("keep", MiB, b"\x42" * MiB)
    assert node.read("keep", MiB, MiB) == b"\x42" * MiB
    assert node.stop() == 0
