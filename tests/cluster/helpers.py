"""Strategies for memberships, and a slow reference placement written from the docstring."""

from __future__ import annotations

from hashlib import blake2b

from hypothesis import strategies as st

from ovis.cluster import Membership, Node, NodeId, vnodes_for

SMALL_VNODES = 8  # small rings: fast, and they exercise wrap-around and zone skipping

oids = st.integers(0, (1 << 64) - 1)
zones = st.sampled_from(["a", "b", "c", "d", "e"])
weights = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0])


def node_id(n: int) -> NodeId:
    return NodeId(f"node-{n}")


@st.composite
def nodes(draw: st.DrawFn, min_size: int = 1, max_size: int = 12) -> list[Node]:
    numbers = draw(st.lists(st.integers(0, 99), min_size=min_size, max_size=max_size, unique=True))
    return [Node(node_id(n), draw(zones), draw(weights)) for n in numbers]


@st.composite
def memberships(draw: st.DrawFn, min_size: int = 1, max_size: int = 12) -> Membership:
    return Membership(tuple(draw(nodes(min_size, max_size))), SMALL_VNODES)


def _h64(data: bytes, person: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8, person=person).digest(), "big")


def reference_replicas(oid: int, members: Membership, copies: int) -> tuple[NodeId, ...]:
    """The placement rule, walked point by point with no precomputed table."""
    ring = sorted(
        (_h64(n.id.encode() + b"\x00" + k.to_bytes(4, "big"), b"ovis-vnode"), n.id, n.zone)
        for n in members.nodes
        for k in range(vnodes_for(n.weight, members.vnodes_per_weight))
    )
    start = _h64(oid.to_bytes(8, "big"), b"ovis-oid")
    first = next((i for i, p in enumerate(ring) if p[0] >= start), 0)
    want = min(copies, len(members.zones))
    chosen: list[NodeId] = []
    seen: set[str] = set()
    for _, owner, zone in ring[first:] + ring[:first]:
        if zone not in seen and len(chosen) < want:
            seen.add(zone)
            chosen.append(owner)
    return tuple(chosen)
