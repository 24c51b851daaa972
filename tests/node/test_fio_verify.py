"""fio's nbd engine writes and verifies random 4 KiB blocks on a volume."""

from __future__ import annotations

import pytest

from tests.conftest import need, run

from .conftest import Node

pytestmark = pytest.mark.interop


def test_fio_randwrite_verifies(node: Node) -> None:
    need("fio")
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": "8M", "object_size": "64K"})
    result = run(
        [
            "fio", "--name=node", "--ioengine=nbd", f"--uri={node.uri('vm')}",
            "--rw=randwrite", "--bs=4k", "--size=8M", "--iodepth=16", "--fsync=16",
            "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--verify_state_save=0",
            "--output-format=terse",
        ]
    )  # fmt: skip
    assert "verify" not in result.stderr.lower(), result.stderr
