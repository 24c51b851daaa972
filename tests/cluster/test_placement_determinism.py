"""Placement is deterministic: same answer in every process, for any node order."""

from __future__ import annotations

import os
import random
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from ovis.cluster import Membership, Node, NodeId, replicas_for

from .helpers import SMALL_VNODES, memberships, nodes, oids, reference_replicas

# Pinned answers: if these change, every object in every cluster would move.
GOLDEN = {
    0x0: ("n8", "n7", "n2"),
    0x1: ("n5", "n8", "n2"),
    0x1_0000_0007: ("n4", "n5", "n7"),
    0x8000_0005_0000_0000: ("n1", "n8", "n6"),
    0xFFFF_FFFF_FFFF_FFFF: ("n2", "n8", "n3"),
}

_GOLDEN_MEMBERS = (
    "Membership(tuple(Node(NodeId(f'n{i}'), f'z{i % 4}', 1.0 + (i % 3)) for i in range(12)))"
)


def golden_members() -> Membership:
    return Membership(tuple(Node(NodeId(f"n{i}"), f"z{i % 4}", 1.0 + (i % 3)) for i in range(12)))


def test_golden_placements_never_change() -> None:
    members = golden_members()
    assert {oid: replicas_for(oid, members, 3) for oid in GOLDEN} == GOLDEN


def test_another_process_with_another_hash_seed_agrees() -> None:
    code = (
        "from ovis.cluster import Membership, Node, NodeId, replicas_for\n"
        f"m = {_GOLDEN_MEMBERS}\n"
        f"print(repr({{o: replicas_for(o, m, 3) for o in {sorted(GOLDEN)!r}}}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert eval(out) == GOLDEN


@settings(max_examples=100, deadline=None)
@given(nodes(), st.randoms(use_true_random=False), st.lists(oids, max_size=20))
def test_node_order_does_not_matter(
    members: list[Node], rng: random.Random, objects: list[int]
) -> None:
    shuffled = list(members)
    rng.shuffle(shuffled)
    a = Membership(tuple(members), SMALL_VNODES)
    b = Membership(tuple(shuffled), SMALL_VNODES)
    assert a == b and hash(a) == hash(b)
    for oid in objects:
        assert replicas_for(oid, a, 2, allow_degraded=True) == replicas_for(
            oid, b, 2, allow_degraded=True
        )


@settings(max_examples=150, deadline=None)
@given(memberships(), st.integers(1, 5), st.lists(oids, min_size=1, max_size=20))
def test_fast_lookup_matches_the_point_by_point_walk(
    members: Membership, copies: int, objects: list[int]
) -> None:
    for oid in objects:
        got = replicas_for(oid, members, copies, allow_degraded=True)
        assert got == reference_replicas(oid, members, copies)
