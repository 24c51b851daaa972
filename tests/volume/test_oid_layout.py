"""Object ids: a pure, documented bit layout that round-trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovis.volume import MAX_INDEX, MAX_VID, ObjectId, ObjectKind, data_oid, inode_oid, parse_oid

vids = st.integers(1, MAX_VID)
indices = st.integers(0, MAX_INDEX)


@given(vids, indices)
def test_data_oid_round_trips(vid: int, index: int) -> None:
    assert parse_oid(data_oid(vid, index)) == ObjectId(ObjectKind.DATA, vid, index)


@given(vids)
def test_inode_oid_round_trips(vid: int) -> None:
    assert parse_oid(inode_oid(vid)) == ObjectId(ObjectKind.INODE, vid, 0)


@given(vids, indices, vids, indices)
def test_distinct_objects_have_distinct_oids(v1: int, i1: int, v2: int, i2: int) -> None:
    assert (data_oid(v1, i1) == data_oid(v2, i2)) == ((v1, i1) == (v2, i2))
    assert data_oid(v1, i1) != inode_oid(v2)


@given(vids, indices, indices)
def test_a_volumes_data_oids_sort_by_index_and_before_every_inode(
    vid: int, i1: int, i2: int
) -> None:
    assert (data_oid(vid, i1) < data_oid(vid, i2)) == (i1 < i2)
    assert data_oid(MAX_VID, MAX_INDEX) < inode_oid(1)


def test_the_layout_is_the_documented_one() -> None:
    assert data_oid(0x123456, 0x89ABCDEF) == 0x00_123456_89ABCDEF
    assert inode_oid(0x123456) == 0x80_123456_00000000


@pytest.mark.parametrize(
    "oid",
    [
        0x00_000000_00000005,  # vid 0 is "unallocated", never a volume
        0x80_000001_00000001,  # an inode has index 0
        0x40_000001_00000000,  # a reserved kind
        -1,
        1 << 64,
    ],
)
def test_oids_this_layout_cannot_produce_are_refused(oid: int) -> None:
    with pytest.raises(ValueError):
        parse_oid(oid)


@pytest.mark.parametrize(("vid", "index"), [(0, 0), (MAX_VID + 1, 0), (1, -1), (1, MAX_INDEX + 1)])
def test_out_of_range_parts_are_refused(vid: int, index: int) -> None:
    with pytest.raises(ValueError):
        data_oid(vid, index)
