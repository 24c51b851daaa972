"""The core interop (qemu-io, nbdcopy, nbdinfo) against every kind of export.

Variants: plain TCP, --readonly, --cow, a unix socket, and TLS with client
certificates.  Each must behave as its kind promises: a read-only export
refuses writes, a cow export never changes its image, and the transports
carry the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import need, run

from ._support import IMAGE_SIZE, MiB, nbdcopy, nbdinfo_json, qemu_io, read_at, sha256_file
from .conftest import VARIANTS, Export

pytestmark = pytest.mark.interop

StartVariant = Callable[[str, Path], Export]


@pytest.fixture(params=VARIANTS)
def export(request: pytest.FixtureRequest, serve_variant: StartVariant, image: Path) -> Export:
    return serve_variant(request.param, image)


def random_source(path: Path, size: int) -> Path:
    """A sparse file of `size` with random data in a few places, the tail included."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, 5 * MiB + 123, size // 2, size - MiB):
            f.seek(offset)
            f.write(os.urandom(MiB))
    return path


def test_core_interop(export: Export, tmp_path: Path) -> None:
    """nbdinfo, a qemu-io pattern round trip, then nbdcopy both ways, on one server."""
    check_nbdinfo(export)
    check_qemu_io_round_trip(export)
    check_nbdcopy_both_ways(export, tmp_path)


def check_qemu_io_round_trip(export: Export) -> None:
    need("qemu-io")
    before = sha256_file(export.image)
    write = ("write -P 0xab 8M 1M", "read -P 0xab 8M 1M")
    if not export.writable:
        result = qemu_io(export.qemu, *write, check=False)
        assert result.returncode != 0
        assert "Permission denied" in result.stderr + result.stdout
        # Opened read-only, the same export reads fine.
        qemu_io(["-r", *export.qemu], "read -P 0 8M 1M", "read -P 0 32M 4M")
        assert sha256_file(export.image) == before
        return
    qemu_io(export.qemu, *write)
    if export.private:
        # A new connection gets a fresh overlay; the image was never written.
        qemu_io(export.qemu, "read -P 0 8M 1M")
        assert sha256_file(export.image) == before
    else:
        qemu_io(export.qemu, "read -P 0xab 8M 1M")  # a second connection sees it
        assert read_at(export.image, 8 * MiB, MiB) == b"\xab" * MiB


def check_nbdcopy_both_ways(export: Export, tmp_path: Path) -> None:
    need("nbdcopy")
    original = sha256_file(export.image)
    out = tmp_path / "out.img"
    nbdcopy(export.uri, str(out))
    assert sha256_file(out) == original

    source = random_source(tmp_path / "source.img", IMAGE_SIZE)
    if not export.writable:
        result = run(["nbdcopy", str(source), export.uri], check=False)
        assert result.returncode != 0
        assert sha256_file(export.image) == original
        return
    nbdcopy(str(source), export.uri)
    if export.private:
        assert sha256_file(export.image) == original
    else:
        assert sha256_file(export.image) == sha256_file(source)
        back = tmp_path / "back.img"
        nbdcopy(export.uri, str(back))
        assert sha256_file(back) == sha256_file(source)


def check_nbdinfo(export: Export) -> None:
    need("nbdinfo")
    document = nbdinfo_json(export.uri)
    assert document["TLS"] is (export.variant == "tls")
    (info,) = document["exports"]
    assert info["export-size"] == IMAGE_SIZE
    assert info["is_read_only"] is (not export.writable)
    assert info["can_zero"] is export.writable
    assert info["can_trim"] is export.writable
    # Each cow connection has its own overlay: a flush on one cannot make
    # writes visible on another, so multi-conn would be a lie.
    assert info["can_multi_conn"] is (not export.private)
    assert info["contexts"] == ["base:allocation"]
