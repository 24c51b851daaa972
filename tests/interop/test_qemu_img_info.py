"""qemu-img info: the size and format qemu sees for an export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, make_image, need, run

from ._support import IMAGE_SIZE, MiB, export_info, qemu_image

pytestmark = pytest.mark.interop


def qemu_img_info(uri: str) -> dict[str, object]:
    info: dict[str, object] = json.loads(
        run(["qemu-img", "info", "--output=json", *qemu_image(uri)]).stdout
    )
    return info


def test_info_reports_the_image_size(serve: Callable[..., Served], image: Path) -> None:
    need("qemu-img")
    served = serve(str(image), "--name", "disk", "--port", "0")
    info = qemu_img_info(served.uri("disk"))
    assert info["virtual-size"] == IMAGE_SIZE
    assert info["format"] == "raw"
    # nbd://host:port/ names the empty export, which a single image also answers.
    assert qemu_img_info(served.uri(""))["virtual-size"] == IMAGE_SIZE
    unknown = run(["qemu-img", "info", *qemu_image(served.uri("nope"))], check=False)
    assert unknown.returncode != 0
    assert served.proc.poll() is None  # and the server is still serving


def test_info_of_an_odd_sized_image(serve: Callable[..., Served], tmp_path: Path) -> None:
    need("qemu-img", "nbdinfo")
    size = 3 * MiB + 1234  # not a multiple of 512
    image = make_image(tmp_path / "odd.img", size)
    served = serve(str(image), "--name", "odd", "--port", "0")
    assert export_info(served.uri("odd"))["export-size"] == size
    # qemu's block layer counts whole sectors: it rounds the size up.
    assert qemu_img_info(served.uri("odd"))["virtual-size"] == (size + 511) // 512 * 512


def test_info_honours_size_override(serve: Callable[..., Served], image: Path) -> None:
    need("qemu-img")
    served = serve(str(image), "--name", "disk", "--port", "0", "--size", "96M")
    assert qemu_img_info(served.uri("disk"))["virtual-size"] == 96 * MiB
