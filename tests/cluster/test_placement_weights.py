"""A node's share of replicas follows its capacity weight."""

from __future__ import annotations

from collections import Counter

import pytest

from ovis.cluster import Membership, Node, NodeId, replicas_for, vnodes_for

OBJECTS = 6000
COPIES = 3


def test_ring_points_are_proportional_to_weight() -> None:
    assert [vnodes_for(w, 128) for w in (0.001, 0.5, 1, 2, 3.5)] == [1, 64, 128, 256, 448]
    members = Membership((Node(NodeId("a"), "z", 1.0), Node(NodeId("b"), "y", 2.5)), 16)
    assert members.ring_size == 16 + 40


# Statistical, so fixed rather than random node names: the bounds are over 4 sigma of the
# vnode noise (1/sqrt(128) per node), and a fixed draw never flakes.
@pytest.mark.parametrize("salt", range(3))
def test_double_weight_gets_about_double_the_replicas(salt: int) -> None:
    # 20 nodes, each in its own zone, so no zone holds more than 1/copies of the weight.
    nodes = [Node(NodeId(f"{salt}-{i}"), f"z{i}", 1.0 if i % 2 else 2.0) for i in range(20)]
    members = Membership(tuple(nodes))
    load = Counter(r for oid in range(OBJECTS) for r in replicas_for(oid, members, COPIES))
    total_weight = sum(n.weight for n in nodes)
    ratios = [load[n.id] / (OBJECTS * COPIES * n.weight / total_weight) for n in nodes]
    assert min(ratios) > 0.6 and max(ratios) < 1.5
    heavy = sum(load[n.id] for n in nodes if n.weight == 2.0) / 10
    light = sum(load[n.id] for n in nodes if n.weight == 1.0) / 10
    assert 1.7 < heavy / light < 2.3
