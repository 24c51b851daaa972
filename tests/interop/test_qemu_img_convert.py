"""qemu-img convert in both directions, checked with qemu-img compare."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, need, run

from ._support import IMAGE_SIZE, MiB, qemu_image, read_at, sha256_file

pytestmark = pytest.mark.interop


def random_source(path: Path) -> Path:
    """Random data in the middle only: where the target has data, the source has holes."""
    with open(path, "wb") as f:
        f.truncate(IMAGE_SIZE)
        for offset in (3 * MiB, 17 * MiB + 4096, 40 * MiB + 1):
            f.seek(offset)
            f.write(os.urandom(2 * MiB))
    return path


def test_convert_export_to_file(serve: Callable[..., Served], image: Path, tmp_path: Path) -> None:
    need("qemu-img")
    served = serve(str(image), "--name", "disk", "--port", "0", "--readonly")
    out = tmp_path / "out.img"
    run(["qemu-img", "convert", *qemu_image(served.uri("disk")), "-O", "raw", str(out)])
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(out), str(image)])
    assert sha256_file(out) == sha256_file(image)


@pytest.mark.parametrize("parallel", [[], ["-W", "-m", "8"]], ids=["serial", "out-of-order"])
def test_convert_file_to_export(
    serve: Callable[..., Served], image: Path, tmp_path: Path, parallel: list[str]
) -> None:
    need("qemu-img")
    served = serve(str(image), "--name", "disk", "--port", "0")
    uri = served.uri("disk")
    source = random_source(tmp_path / "source.img")
    run(["qemu-img", "convert", "-n", *parallel, "-f", "raw", str(source), "-O", "raw", uri])
    # The target's old data, where the source has holes, must be gone.
    assert read_at(image, 0, MiB) == bytes(MiB)
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(source), uri])
    assert sha256_file(image) == sha256_file(source)
