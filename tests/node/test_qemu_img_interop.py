"""qemu-img sees a volume as a raw disk: info, convert into it, compare with the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import need, run

from .conftest import MiB, Node, patterned_image

pytestmark = pytest.mark.interop


def test_qemu_img_info_convert_compare(node: Node, tmp_path: Path) -> None:
    need("qemu-img")
    source = patterned_image(tmp_path / "source.img", 48 * MiB)
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": "48M"})

    info = json.loads(run(["qemu-img", "info", "--output=json", node.uri("vm")]).stdout)
    assert info["virtual-size"] == 48 * MiB and info["format"] == "raw"

    run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(source), node.uri("vm")])
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(source), node.uri("vm")])

    node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "copied"})
    run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(source), node.uri("vm@copied")])
    back = tmp_path / "back.img"
    run(["qemu-img", "convert", "-f", "raw", "-O", "raw", node.uri("vm@copied"), str(back)])
    assert back.read_bytes() == source.read_bytes()
