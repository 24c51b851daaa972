"""Exactly `copies` distinct nodes, never two in one zone; fewer zones is an explicit choice."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ovis.cluster import Membership, Node, NodeId, NotEnoughZones, replicas_for

from .helpers import memberships, oids


@settings(max_examples=200, deadline=None)
@given(memberships(), st.integers(1, 5), oids)
def test_enough_zones_gives_exactly_copies_nodes_in_distinct_zones(
    members: Membership, copies: int, oid: int
) -> None:
    assume(len(members.zones) >= copies)
    replicas = replicas_for(oid, members, copies)
    assert len(replicas) == copies
    assert len({members.node(r).zone for r in replicas}) == copies  # so the nodes differ too


@settings(max_examples=100, deadline=None)
@given(memberships(), st.integers(1, 5), oids)
def test_fewer_zones_raises_unless_degraded_allowed(
    members: Membership, copies: int, oid: int
) -> None:
    assume(len(members.zones) < copies)
    with pytest.raises(NotEnoughZones):
        replicas_for(oid, members, copies)
    replicas = replicas_for(oid, members, copies, allow_degraded=True)
    assert {members.node(r).zone for r in replicas} == members.zones
    assert len(replicas) == len(members.zones)


def test_empty_membership_raises_even_when_degraded() -> None:
    with pytest.raises(NotEnoughZones, match="has 0"):
        replicas_for(1, Membership(()), 1, allow_degraded=True)


def test_not_enough_zones_says_what_to_do() -> None:
    members = Membership((Node(NodeId("a"), "z1"), Node(NodeId("b"), "z1")))
    with pytest.raises(NotEnoughZones, match="3 copies need 3 zones but the membership has 1"):
        replicas_for(7, members, 3)


@pytest.mark.parametrize("copies", [0, -1])
def test_copies_below_one_is_refused(copies: int) -> None:
    with pytest.raises(ValueError, match="copies"):
        replicas_for(1, Membership((Node(NodeId("a"), "z"),)), copies)


@pytest.mark.parametrize("oid", [-1, 1 << 64])
def test_an_oid_outside_u64_is_refused(oid: int) -> None:
    with pytest.raises(ValueError, match="u64"):
        replicas_for(oid, Membership((Node(NodeId("a"), "z"),)), 1)
