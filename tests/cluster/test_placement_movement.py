"""A join or a leave moves only the objects it must."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ovis.cluster import Membership, Node, NodeId, replicas_for

from .helpers import SMALL_VNODES, memberships, node_id, nodes, oids, weights

OBJECTS = st.lists(oids, min_size=50, max_size=50)
new_zones = st.sampled_from(["a", "b", "c", "d", "e", "new"])


@settings(max_examples=120, deadline=None)
@given(memberships(), new_zones, weights, st.integers(1, 4), OBJECTS)
def test_a_join_moves_only_objects_the_new_node_now_holds(
    members: Membership, zone: str, weight: float, copies: int, objects: list[int]
) -> None:
    joiner = Node(node_id(1000), zone, weight)
    after = members.with_node(joiner)
    for oid in objects:
        old = replicas_for(oid, members, copies, allow_degraded=True)
        new = replicas_for(oid, after, copies, allow_degraded=True)
        if new != old:
            assert joiner.id in new


@settings(max_examples=120, deadline=None)
@given(nodes(min_size=2), st.data(), st.integers(1, 4), OBJECTS)
def test_a_leave_moves_only_objects_the_leaver_held(
    members: list[Node], data: st.DataObject, copies: int, objects: list[int]
) -> None:
    before = Membership(tuple(members), SMALL_VNODES)
    leaver = data.draw(st.sampled_from(members)).id
    after = before.without(leaver)
    for oid in objects:
        old = replicas_for(oid, before, copies, allow_degraded=True)
        new = replicas_for(oid, after, copies, allow_degraded=True)
        if new != old:
            assert leaver in old
            # The survivors keep their copies: only the leaver's slot is refilled.
            assert set(old) - {leaver} <= set(new)


def test_reweighting_a_node_keeps_its_first_points() -> None:
    members = Membership(tuple(Node(NodeId(f"n{i}"), f"z{i}") for i in range(8)))
    heavier = members.without(NodeId("n0")).with_node(Node(NodeId("n0"), "z0", 2.0))
    moved = [
        oid for oid in range(2000) if replicas_for(oid, members, 2) != replicas_for(oid, heavier, 2)
    ]
    assert moved
    assert all(NodeId("n0") in replicas_for(oid, heavier, 2) for oid in moved)
