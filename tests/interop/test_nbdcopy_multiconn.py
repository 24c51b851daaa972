"""nbdcopy with several connections, both directions, checked by sha256.

ovis advertises multi-conn for a plain export, so nbdcopy spreads the copy
over 4 connections (with 4 threads, or it would cap them at the 2 cores).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need, run

from ._support import IMAGE_SIZE, MiB, sha256_file

pytestmark = pytest.mark.interop


def copy(src: str, dst: str) -> None:
    result = run(["nbdcopy", "--connections=4", "--threads=4", "--verbose", src, dst])
    used = re.search(r"connections=(\d+)", result.stderr)
    assert used, result.stderr[-2000:]
    assert int(used[1]) == 4, "nbdcopy did not use multi-conn"


def mostly_random(path: Path, size: int) -> Path:
    """Random data in every other MiB, holes between, an unaligned tail write."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, 2 * MiB):
            f.seek(offset)
            f.write(os.urandom(MiB))
        f.seek(size - 3000)
        f.write(os.urandom(1000))
    return path


@pytest.fixture
def served(serve: Callable[..., Served], image: Path) -> Served:
    need("nbdcopy")
    return serve(str(image), "--name", "disk", "--port", "0")


def test_copy_export_to_file(served: Served, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    copy(served.uri("disk"), str(out))
    assert out.stat().st_size == IMAGE_SIZE
    assert sha256_file(out) == sha256_file(image)


def test_copy_file_to_export(served: Served, image: Path, tmp_path: Path) -> None:
    source = mostly_random(tmp_path / "source.img", IMAGE_SIZE)
    copy(str(source), served.uri("disk"))
    assert sha256_file(image) == sha256_file(source)
    back = tmp_path / "back.img"
    copy(served.uri("disk"), str(back))
    assert sha256_file(back) == sha256_file(source)


def test_copy_between_two_exports(serve: Callable[..., Served], tmp_path: Path) -> None:
    need("nbdcopy")
    source = mostly_random(tmp_path / "source.img", IMAGE_SIZE)
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.write(b"\xff" * 3 * MiB)  # old data that the copy must overwrite with zeros
        f.truncate(IMAGE_SIZE)
    one = serve(str(source), "--name", "source", "--port", "0", "--readonly")
    other = serve(str(target), "--name", "target", "--port", "0")
    copy(one.uri("source"), other.uri("target"))
    assert sha256_file(target) == sha256_file(source)
