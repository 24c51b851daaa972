"""Inodes serialise compactly and come back exactly; damage is refused."""

from __future__ import annotations

import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovis.volume import MAX_VID, Inode
from ovis.volume._inode import VERSION_BLOCK


@st.composite
def inodes(draw: st.DrawFn) -> Inode:
    object_size = 1 << draw(st.integers(12, 26))
    n = draw(st.integers(0, 40))
    size = max(0, n * object_size - draw(st.integers(0, object_size - 1)))
    owners = draw(
        st.lists(
            st.sampled_from([0, 0, 7, 9, MAX_VID]),
            min_size=len(range(-(-size // object_size))),
            max_size=-(-size // object_size),
        )
    )
    return Inode(
        vid=draw(st.integers(1, MAX_VID)),
        name=draw(st.text(max_size=40)),
        size=size,
        object_size=object_size,
        parent_vid=draw(st.integers(0, MAX_VID)),
        snapshot=draw(st.booleans()),
        tag=draw(st.text(max_size=20)),
        created_ns=draw(st.integers(0, 2**63)),
        snapshot_ns=draw(st.integers(0, 2**63)),
        versions_reserved=draw(st.integers(0, 2**64 - 1)),
        owners=array.array("I", owners),
    )


@given(inodes())
def test_inode_round_trips(inode: Inode) -> None:
    assert Inode.decode(inode.encode()) == inode


def test_owner_runs_compress_to_almost_nothing() -> None:
    inode = Inode(vid=3, name="big", size=1 << 40, object_size=4 << 20)
    inode.owners[: len(inode.owners) // 2] = array.array("I", [3]) * (len(inode.owners) // 2)
    assert len(inode.owners) == 262144
    assert len(inode.encode()) < 2048


@pytest.mark.parametrize("cut", [0, 10, 60, -1])
def test_truncated_or_damaged_inodes_are_refused(cut: int) -> None:
    raw = bytearray(Inode(vid=1, name="x", size=1 << 20, object_size=65536).encode())
    with pytest.raises(ValueError):
        Inode.decode(raw[:cut] if cut >= 0 else raw[:-1] + b"\xff")


def test_reserving_versions_moves_the_floor_by_a_block() -> None:
    inode = Inode(vid=1, name="x", size=4096, object_size=4096)
    assert inode.reserve_versions() == 1
    assert inode.reserve_versions() == VERSION_BLOCK + 1
    assert inode.versions_reserved == 2 * VERSION_BLOCK


def test_child_shares_the_owner_array_by_copy() -> None:
    parent = Inode(vid=1, name="x", size=3 * 4096, object_size=4096)
    parent.owners[1] = 1
    child = parent.child(2, "y", 5)
    child.owners[2] = 2
    assert list(parent.owners) == [0, 1, 0]
    assert list(child.owners) == [0, 1, 2]
    assert (child.parent_vid, child.snapshot, child.versions_reserved) == (1, False, 0)
