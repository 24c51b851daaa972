"""create, list, info, snapshot, clone, rollback, resize, delete and tree through `ovis vdi`."""

from __future__ import annotations

import pytest

from tests.conftest import need

from .conftest import MiB, Node, qemu_io

pytestmark = pytest.mark.interop


def test_volume_lifecycle_through_the_cli(node: Node) -> None:
    need("qemu-io")
    created = node.vdi_json("create", "vm1", "64M")
    assert (created["spec"], created["size"], created["used_bytes"]) == ("vm1", 64 * MiB, 0)

    qemu_io(node.uri("vm1"), "write -P 0x11 0 1M")
    snap = node.vdi_json("snapshot", "vm1", "--tag", "monday")
    assert (snap["spec"], snap["snapshot"], snap["used_bytes"]) == ("vm1@monday", True, 4 * MiB)
    stamped = node.vdi_json("snapshot", "vm1")  # the default tag is a timestamp
    assert stamped["tag"][:2] == "20" and stamped["tag"].endswith("Z")

    qemu_io(node.uri("vm1"), "write -P 0x22 0 1M")
    info = node.vdi_json("info", "vm1")
    assert (info["snapshot_count"], info["used_bytes"], info["open"]) == (2, 4 * MiB, False)

    listing = {v["spec"]: v for v in node.vdi_json("list")}
    assert set(listing) == {"vm1", "vm1@monday", f"vm1@{stamped['tag']}"}
    table = node.vdi("list").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "USED", "SHARED", "SNAPSHOTS", "CREATED"]
    assert any(line.startswith("vm1@monday ") for line in table)

    clone = node.vdi_json("clone", "vm1@monday", "vm1-clone")
    assert clone["parent_vid"] == snap["vid"] and clone["shared_bytes"] == 4 * MiB
    qemu_io(node.uri("vm1-clone"), "read -P 0x11 0 1M")

    assert node.vdi("rollback", "vm1", "--to", "monday").stdout == "rolled vm1 back to vm1@monday\n"
    qemu_io(node.uri("vm1"), "read -P 0x11 0 1M")

    assert node.vdi_json("resize", "vm1", "128M")["size"] == 128 * MiB
    assert node.vdi_json("resize", "vm1", "8M")["size"] == 8 * MiB  # no data beyond 8M

    tree = node.vdi_json("tree")
    monday = next(root for root in tree if root["spec"] == "vm1@monday")
    assert {child["spec"] for child in monday["children"]} >= {"vm1", "vm1-clone"}
    drawn = node.vdi("tree").stdout
    assert "vm1@monday" in drawn and "└── " in drawn

    node.vdi("delete", f"vm1@{stamped['tag']}")
    assert node.vdi_json("delete", "vm1") == {"deleted": "vm1"}  # its snapshots go too
    assert [v["spec"] for v in node.vdi_json("list")] == ["vm1-clone"]
    qemu_io(node.uri("vm1-clone"), "read -P 0x11 0 1M")  # the clone kept its data
