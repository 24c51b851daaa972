"""`vdi diff -o` then `vdi apply-diff` onto a clone of the base reproduces the newer snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import MiB, Node

pytestmark = pytest.mark.interop
SIZE = 24 * MiB


def test_diff_apply_round_trip(node: Node, tmp_path: Path) -> None:
    node.api_call("POST", "/v1/volumes", {"name": "vm", "size": SIZE})
    node.write("vm", 0, b"\x11" * (2 * MiB))
    node.write("vm", 10 * MiB, b"\x12" * MiB)
    node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "s1"})
    node.write("vm", MiB, b"\x22" * 4096)
    node.write("vm", 10 * MiB, bytes(MiB))  # data that becomes zeros
    node.write("vm", 20 * MiB + 512, b"\x23" * 8192)
    node.api_call("POST", "/v1/volumes/vm/snapshots", {"tag": "s2"})

    extents = node.api_call("GET", "/v1/diff?old=vm@s1&new=vm@s2")[1]["extents"]
    assert [(e["offset"], e["length"]) for e in extents] == [
        (0, 4 * MiB), (8 * MiB, 4 * MiB), (20 * MiB, 4 * MiB)
    ]  # fmt: skip
    diff = tmp_path / "s1-s2.diff"
    stats = node.vdi_json("diff", "vm@s1", "vm@s2", "--output", str(diff))
    assert stats["from"]["spec"] == "vm@s1" and stats["to"]["spec"] == "vm@s2"
    assert stats["data_bytes"] < 3 * MiB  # zeros inside changed objects stay out of the file

    node.api_call("POST", "/v1/volumes/vm@s1/clone", {"name": "copy"})
    applied = node.vdi_json("apply-diff", "copy", str(diff))
    assert applied["snapshot"] == "copy@s2"
    assert node.read("copy", 0, SIZE) == node.read("vm@s2", 0, SIZE)

    # Diffs chain: s2 -> the live volume, applied where copy@s2 marks the base.
    node.write("vm", 5 * MiB, b"\x33" * MiB)
    live = tmp_path / "s2-live.diff"
    node.vdi("diff", "vm@s2", "vm", "-o", str(live))
    node.vdi("apply-diff", "copy", str(live))
    assert node.read("copy", 0, SIZE) == node.read("vm", 0, SIZE)

    damaged = tmp_path / "damaged.diff"
    blob = bytearray(diff.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged.write_bytes(blob)
    node.api_call("POST", "/v1/volumes", {"name": "other", "size": SIZE})
    errors = node.vdi_errors(
        [
            ("apply-diff", "copy", str(diff)),  # copy is no longer at s1
            ("apply-diff", "other", str(diff)),  # never was
            ("apply-diff", "copy", str(damaged)),
            ("apply-diff", "copy", str(tmp_path / "s1-s2.diff.partial")),
        ]
    )
    assert "does not hold the diff's base vm@s1" in errors[0]
    assert "does not hold the diff's base vm@s1" in errors[1]
    assert "damaged or truncated" in errors[2]
    assert "cannot read" in errors[3] and "No such file" in errors[3]
    assert node.read("copy", 0, SIZE) == node.read("vm", 0, SIZE)  # nothing was written
