"""Snapshots are served read-only: writes to name@tag fail, and the data stays."""

from __future__ import annotations

import pytest

from tests.conftest import need, run

from .conftest import MiB, Node

pytestmark = pytest.mark.interop

WRITE = """
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.is_read_only()
try:
    h.pwrite(b"x" * 4096, 0)
except nbd.Error as e:
    print("refused", e.errno)
else:
    print("accepted")
"""


def test_writes_to_a_snapshot_fail(node: Node) -> None:
    need("qemu-io", "nbdsh")
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": 8 * MiB})
    node.write("vm", 0, b"\x42" * MiB)
    node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "gold"})

    opened = run(["qemu-io", "-f", "raw", "-c", "write 0 4k", node.uri("vm@gold")], check=False)
    assert opened.returncode != 0 and "Permission denied" in opened.stderr + opened.stdout

    result = run(["/usr/bin/python3", "-c", WRITE, node.uri("vm@gold")])
    assert result.stdout.split() == ["refused", "EPERM"]

    assert node.read("vm@gold", 0, MiB) == b"\x42" * MiB
    node.write("vm", 0, b"\x43" * 4096)  # the volume itself stays writable
    assert node.read("vm@gold", 0, 4096) == b"\x42" * 4096
