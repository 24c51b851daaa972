"""Membership is an immutable, validated value with join and leave as new values."""

from __future__ import annotations

import dataclasses

import pytest

from ovis.cluster import Membership, Node, NodeId

A = Node(NodeId("a"), "z1", 1.0)
B = Node(NodeId("b"), "z2", 2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": NodeId(""), "zone": "z"}, "id must not be empty"),
        ({"id": NodeId("a"), "zone": ""}, "empty zone"),
        ({"id": NodeId("a"), "zone": "z", "weight": 0.0}, "must be > 0"),
        ({"id": NodeId("a"), "zone": "z", "weight": float("nan")}, "must be > 0"),
        ({"id": NodeId("a"), "zone": "z", "weight": float("inf")}, "must be > 0"),
    ],
)
def test_an_invalid_node_cannot_exist(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Node(**kwargs)  # type: ignore[arg-type]


def test_duplicate_node_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        Membership((A, Node(NodeId("a"), "z9")))
    with pytest.raises(ValueError, match="appears twice"):
        Membership((A,)).with_node(Node(NodeId("a"), "z9"))


def test_a_weight_in_the_wrong_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller weight unit"):
        Membership((Node(NodeId("a"), "z", 4e12),))


def test_vnode_density_must_be_positive() -> None:
    with pytest.raises(ValueError, match="vnodes_per_weight"):
        Membership((A,), 0)


def test_join_and_leave_give_new_values() -> None:
    one = Membership((A,))
    two = one.with_node(B)
    assert one.nodes == (A,) and two.nodes == (A, B)
    assert two.without(NodeId("b")) == one
    assert two.zones == frozenset({"z1", "z2"})
    assert two.node(NodeId("b")) is B
    with pytest.raises(KeyError):
        one.without(NodeId("b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.nodes = ()  # type: ignore[misc]
