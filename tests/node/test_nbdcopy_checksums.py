"""nbdcopy with several connections copies into and out of a volume byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import need, run

from .conftest import MiB, Node, patterned_image, sha256_file

pytestmark = pytest.mark.interop


def test_nbdcopy_in_and_out_with_checksums(node: Node, tmp_path: Path) -> None:
    need("nbdcopy")
    source = patterned_image(tmp_path / "source.img", 40 * MiB)
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": "40M"})
    copy = ["nbdcopy", "--connections=4", "--threads=4", "--flush"]
    run([*copy, str(source), node.uri("vm")])
    node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "s"})

    for spec in ("vm", "vm@s"):
        out = tmp_path / f"{spec}.img"
        run([*copy, node.uri(spec), str(out)])
        assert sha256_file(out) == sha256_file(source), spec
    # nbdcopy to a volume that already has data, through a snapshot's clone.
    node.api_call("POST", "/v1/volumes/vm@s/clone", {"name": "c"})
    run([*copy, str(source), node.uri("c")])
    run(["nbdcopy", node.uri("c"), str(tmp_path / "c.img")])
    assert sha256_file(tmp_path / "c.img") == sha256_file(source)
