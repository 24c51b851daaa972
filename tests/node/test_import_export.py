"""`vdi import` from a file or an nbd:// URI, then `vdi export`: same bytes, holes kept."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served

from .conftest import MiB, Node, patterned_image, sha256_file

pytestmark = pytest.mark.interop
SIZE = 40 * MiB
DATA = 3 * (MiB + 2 * 4096)  # what patterned_image writes


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_import_file_and_nbd_then_export(
    node: Node, serve: Callable[..., Served], tmp_path: Path
) -> None:
    source = patterned_image(tmp_path / "source.img", SIZE)
    digest = sha256_file(source)

    stats = node.vdi_json("import", "fromfile", str(source))
    assert stats["size"] == SIZE and stats["zeroed"] == 0
    assert DATA <= stats["written"] <= DATA + 3 * 64 * 1024  # data only, at 64 KiB grain
    assert node.vdi_json("info", "fromfile")["size"] == SIZE  # created with the source's size

    served = serve(str(source), "--name", "src", "--port", "0", "--readonly")
    stats = node.vdi_json("import", "fromnbd", served.uri("src"), "--connections", "3")
    assert stats["written"] <= DATA + 3 * 64 * 1024

    # Into a volume that already holds data where the source has holes.
    node.api_call("POST", "/v1/volumes", {"name": "stale", "size": SIZE + 4 * MiB})
    for at in (5 * MiB, 20 * MiB, SIZE - 6 * MiB):
        node.write("stale", at, b"\xff" * MiB)
    stats = node.vdi_json("import", "stale", str(source))
    assert stats["zeroed"] >= 3 * MiB

    assert node.read("fromnbd", 0, SIZE) == source.read_bytes()
    for name in ("fromfile", "stale"):
        out = tmp_path / f"{name}.img"
        stats = node.vdi_json("export", name, str(out))
        if name == "stale":  # 4 MiB bigger than the source, and zeros there
            assert out.stat().st_size == SIZE + 4 * MiB
            os.truncate(out, SIZE)
        assert sha256_file(out) == digest, name
        assert allocated(out) < 8 * MiB, name  # holes stayed holes
