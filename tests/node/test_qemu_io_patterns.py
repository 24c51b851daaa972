"""qemu-io writes patterns to a volume and reads them back, on the same and later connections."""

from __future__ import annotations

import pytest

from tests.conftest import need

from .conftest import Node, qemu_io

pytestmark = pytest.mark.interop


def test_qemu_io_write_read_patterns(node: Node) -> None:
    need("qemu-io")
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": "32M"})
    uri = node.uri("vm")
    qemu_io(
        uri,
        "write -P 0xab 0 64k",
        "read -P 0xab 0 64k",
        "write -P 0xcd 4190208 8k",  # straddles the first two 4 MiB objects
        "write -z 16M 4M",
        "flush",
        "read -P 0xcd 4190208 8k",
        "read -P 0 16M 4M",
    )
    qemu_io(uri, "read -P 0xab 0 64k", "read -P 0xcd 4190208 8k", "read -P 0 64k 4000k")
    out = qemu_io(uri, "write -f -P 0x5e 30M 1M", "read -P 0x5e 30M 1M")  # FUA
    assert "wrote 1048576/1048576" in out
