"""Block status (base:allocation) must match the image: never a hole over data.

qemu-img convert and nbdcopy skip whatever the server calls a hole, so a
server that reports data as a hole silently loses it in every copy.  These
tests compare the maps qemu-img and nbdinfo get over NBD with the image's
real layout (qemu-img map of the file itself), after writing into holes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, make_image, need, run

from ._support import (
    MiB,
    covered,
    data_ranges,
    nbdcopy,
    nbdinfo_map,
    qemu_image,
    qemu_img_map,
    qemu_io,
    read_at,
    sha256_file,
)

pytestmark = pytest.mark.interop


def file_map(image: Path) -> list[tuple[int, int, bool]]:
    return qemu_img_map(["-f", "raw", str(image)])


def test_maps_match_the_image_layout(serve: Callable[..., Served], image: Path) -> None:
    need("qemu-img", "nbdinfo")
    served = serve(str(image), "--name", "disk", "--port", "0")
    truth = file_map(image)
    assert data_ranges(truth) == [(0, MiB), (62 * MiB, 63 * MiB)]  # the fixture's layout
    assert qemu_img_map(qemu_image(served.uri("disk"))) == truth
    assert nbdinfo_map(served.uri("disk")) == truth


def test_data_written_into_a_hole_is_reported_and_copied(
    serve: Callable[..., Served], image: Path, tmp_path: Path
) -> None:
    need("qemu-img", "qemu-io", "nbdinfo", "nbdcopy")
    served = serve(str(image), "--name", "disk", "--port", "0")
    uri = served.uri("disk")
    qemu_io(
        qemu_image(uri),
        "write -P 0xcd 32M 1M",
        f"write -P 0xce {40 * MiB + 100} 10",  # a few bytes in the middle of a hole
        "aio_write -P 0xcf 48M 4k",
        "aio_flush",
    )
    truth = file_map(image)
    for extents in (qemu_img_map(qemu_image(uri)), nbdinfo_map(uri)):
        assert extents == truth
        assert covered(extents, 32 * MiB, 33 * MiB, data=True)
        assert covered(extents, 40 * MiB + 100, 40 * MiB + 110, data=True)
        assert covered(extents, 48 * MiB, 48 * MiB + 4096, data=True)
        assert covered(extents, 16 * MiB, 32 * MiB, data=False)  # still a hole

    converted = tmp_path / "converted.img"
    run(["qemu-img", "convert", *qemu_image(uri), "-O", "raw", str(converted)])
    copied = tmp_path / "copied.img"
    nbdcopy(uri, str(copied))
    for out in (converted, copied):
        assert read_at(out, 32 * MiB, MiB) == b"\xcd" * MiB
        assert read_at(out, 40 * MiB + 96, 18) == bytes(4) + b"\xce" * 10 + bytes(4)
        assert read_at(out, 48 * MiB, 4096) == b"\xcf" * 4096
        assert sha256_file(out) == sha256_file(image)


def test_zeroing_and_discard_make_holes_reported(serve: Callable[..., Served], image: Path) -> None:
    need("qemu-io", "nbdinfo")
    served = serve(str(image), "--name", "disk", "--port", "0")
    uri = served.uri("disk")
    qemu_io(qemu_image(uri), "write -P 0x11 8M 2M", "discard 8M 1M", "write -z -u 9M 1M")
    extents = nbdinfo_map(uri)
    assert extents == file_map(image)
    assert covered(extents, 8 * MiB, 10 * MiB, data=False)
    qemu_io(qemu_image(uri), "read -P 0 8M 2M", "read -v 0 16")


def test_map_of_an_odd_sized_image_ends_at_its_size(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    need("nbdinfo")
    size = 9 * MiB + 777
    image = make_image(tmp_path / "odd.img", size)
    with open(image, "r+b") as f:  # data in the last, partial block
        f.seek(size - 100)
        f.write(b"\x42" * 100)
    served = serve(str(image), "--name", "odd", "--port", "0")
    extents = nbdinfo_map(served.uri("odd"))
    start, length, data = extents[-1]
    assert start + length == size
    assert data
    assert covered(extents, 0, MiB, data=True)


def test_size_override_past_the_end_of_the_file(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    need("nbdinfo", "qemu-io", "nbdcopy")
    image = make_image(tmp_path / "short.img", 8 * MiB)
    served = serve(str(image), "--name", "disk", "--port", "0", "--size", "12M")
    uri = served.uri("disk")
    extents = nbdinfo_map(uri)
    assert extents[-1][0] + extents[-1][1] == 12 * MiB
    assert covered(extents, 8 * MiB, 12 * MiB, data=False)  # beyond the file: zeros
    qemu_io(qemu_image(uri), "read -P 0 8M 4M", f"write -P 0x3c {10 * MiB} 4k")
    extents = nbdinfo_map(uri)
    assert covered(extents, 10 * MiB, 10 * MiB + 4096, data=True)
    assert read_at(image, 10 * MiB, 4096) == b"\x3c" * 4096  # the file grew to hold it
    copied = tmp_path / "copied.img"
    nbdcopy(uri, str(copied))
    assert copied.stat().st_size == 12 * MiB
    assert read_at(copied, 0, 10 * MiB + 4096) == read_at(image, 0, 10 * MiB + 4096)
