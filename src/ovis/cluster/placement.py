"""Placement: which nodes hold an object, as a pure function of its oid and the membership.

Consistent hashing with virtual nodes, as Sheepdog's `oid_to_vnodes` (see
research/sheepdog.md, section 4):

- Each node puts `vnodes_for(weight)` points on a 64-bit ring, point k at
  blake2b(node id, k).  A node's points depend on that node alone, so a join
  or a leave adds or removes only its own points, and a reweight only the
  points past the smaller count.
- An object starts at the first point at or after blake2b(oid) (wrapping) and
  walks clockwise, taking the owner of each point whose zone is not taken yet,
  until it has `copies` nodes.  The first is the primary.  One node per zone
  also means the nodes are distinct.

What follows from that (tests/cluster checks it; bench/placement_sim.py measures it
at 1,000 nodes):

- Deterministic everywhere: only blake2b and integer arithmetic, never
  Python's salted `hash()`, and the result does not depend on the order in
  which nodes were listed.
- Minimal movement: after a join, an object's replica list changes only if it
  now includes the new node; after a leave, only if it included the leaver.
  A point that is skipped leaves the walk exactly as it was.
- Within a zone, a node's share of replicas follows its weight, within the
  vnode noise (about 1/sqrt(vnodes)).  Across zones, shares follow weight when
  the zones weigh the same.  Unequal zones are drawn like weighted sampling
  without replacement: a light zone gets somewhat more than its weighted share
  and a heavy one less, and no zone ever holds more than 1/copies of the
  replicas.  Keep zones balanced (bench/placement_sim.py measures the effect).

Fewer zones than copies raises `NotEnoughZones`.  `allow_degraded=True` gives
one copy per zone instead, as Sheepdog's non-strict mode does; a write
acknowledged on fewer copies would not survive copies-1 failures (DESIGN.md,
invariant 1), so degrading must be the caller's explicit choice.

The ring is built once per membership (once per epoch) in `Membership` (0.6 s at
1,000 nodes of 128 vnodes), and on the first lookup for a copy count, the answer
for every ring position (one backward pass, 0.3 s more).  Both block: an async
caller does them in a worker thread when the epoch changes.  A lookup then costs
one blake2b, one bisect and one list index: 3-4 us on a small shared machine.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from bisect import bisect_left
from hashlib import blake2b
from typing import NewType

NodeId = NewType("NodeId", str)

DEFAULT_VNODES_PER_WEIGHT = 128
"""Ring points per unit of weight (Sheepdog's default vnode count per node)."""

MAX_VNODES_PER_NODE = 1 << 20
"""A guard against weights in the wrong unit (bytes instead of TB)."""

_OID_PERSON = b"ovis-oid"
_VNODE_PERSON = b"ovis-vnode"


class PlacementError(Exception):
    """Base of the errors `replicas_for` raises when no placement is possible."""


class NotEnoughZones(PlacementError):
    """The membership has fewer zones than the copies asked for (or no node at all)."""

    def __init__(self, copies: int, zones: int) -> None:
        super().__init__(
            f"{copies} copies need {copies} zones but the membership has {zones}; "
            "add nodes in other zones, or pass allow_degraded=True to place one copy per zone"
        )
        self.copies = copies
        self.zones = zones


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A cluster member as placement sees it: its id, failure zone and capacity weight.

    `weight` is relative capacity in any unit that keeps it near 1 (TB, say):
    a node of weight 2 gets twice the ring points of a node of weight 1.
    """

    id: NodeId
    zone: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a node id must not be empty")
        if not self.zone:
            raise ValueError(f"node {self.id!r} has an empty zone")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"node {self.id!r} has weight {self.weight}; it must be > 0")


def vnodes_for(weight: float, vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT) -> int:
    """How many ring points a node of this weight gets: at least one."""
    return max(1, round(weight * vnodes_per_weight))


def _vnode_point(node_id: NodeId, k: int) -> int:
    key = node_id.encode() + b"\x00" + k.to_bytes(4, "big")
    return int.from_bytes(blake2b(key, digest_size=8, person=_VNODE_PERSON).digest(), "big")


_OID_HASHER = blake2b(digest_size=8, person=_OID_PERSON)  # copying beats a fresh one


def oid_point(oid: int) -> int:
    """Where an object id falls on the ring (a stable 64-bit hash)."""
    try:
        key = oid.to_bytes(8, "big")
    except OverflowError:
        raise ValueError(f"object id {oid} is not a u64") from None
    hasher = _OID_HASHER.copy()
    hasher.update(key)
    return int.from_bytes(hasher.digest(), "big")


@dataclasses.dataclass(frozen=True, slots=True)
class _Ring:
    points: list[int]  # sorted ring positions
    owners: list[NodeId]  # owner of each point
    zones: list[int]  # zone number of each point's owner
    zone_count: int


def _build_ring(nodes: tuple[Node, ...], vnodes_per_weight: int) -> _Ring:
    zone_numbers = {zone: i for i, zone in enumerate(sorted({n.zone for n in nodes}))}
    entries: list[tuple[int, NodeId, int]] = []
    for node in nodes:
        count = vnodes_for(node.weight, vnodes_per_weight)
        if count > MAX_VNODES_PER_NODE:
            raise ValueError(
                f"node {node.id!r} would get {count} ring points; use a smaller weight unit"
            )
        zone = zone_numbers[node.zone]
        entries.extend((_vnode_point(node.id, k), node.id, zone) for k in range(count))
    entries.sort()  # a tie on the point is broken by node id: still deterministic
    return _Ring(
        points=[e[0] for e in entries],
        owners=[e[1] for e in entries],
        zones=[e[2] for e in entries],
        zone_count=len(zone_numbers),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    """The nodes of one epoch, with their hash ring built once.

    An immutable value: two memberships with the same nodes and vnode density
    are equal and place every object identically, whatever order the nodes
    were given in.  Node ids must be unique.
    """

    nodes: tuple[Node, ...]
    vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT
    _ring: _Ring = dataclasses.field(init=False, repr=False, compare=False)
    # The replica list for each ring position, one table per copy count, built on first use.
    _tables: dict[int, list[tuple[NodeId, ...]]] = dataclasses.field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        nodes = tuple(sorted(self.nodes, key=lambda n: n.id))
        for a, b in itertools.pairwise(nodes):
            if a.id == b.id:
                raise ValueError(f"node id {a.id!r} appears twice in the membership")
        if self.vnodes_per_weight < 1:
            raise ValueError(f"vnodes_per_weight is {self.vnodes_per_weight}; it must be >= 1")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "_ring", _build_ring(nodes, self.vnodes_per_weight))

    @property
    def zones(self) -> frozenset[str]:
        """The zones that have at least one node: at most this many copies fit."""
        return frozenset(n.zone for n in self.nodes)

    @property
    def ring_size(self) -> int:
        """How many points the ring holds (the sum of every node's vnodes)."""
        return len(self._ring.points)

    def _table(self, want: int) -> list[tuple[NodeId, ...]]:
        table = self._tables.get(want)
        if table is None:
            table = self._tables[want] = _replica_table(self._ring, want)
        return table

    def node(self, node_id: NodeId) -> Node:
        """The member with this id; KeyError if there is none."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def with_node(self, node: Node) -> Membership:
        """This membership plus `node` (a join); ValueError if its id is taken."""
        return Membership((*self.nodes, node), self.vnodes_per_weight)

    def without(self, node_id: NodeId) -> Membership:
        """This membership minus the node `node_id` (a leave); KeyError if absent."""
        self.node(node_id)
        return Membership(tuple(n for n in self.nodes if n.id != node_id), self.vnodes_per_weight)


def _replica_table(ring: _Ring, want: int) -> list[tuple[NodeId, ...]]:
    """The answer of the clockwise walk from every ring position, in one backward pass.

    The walk from position i takes the first point of each zone in the order
    met, so its list is point i followed by the list from i+1 without i's
    zone.  Start from a direct walk at position 0 (= position `size`, wrapped)
    and go backwards: O(size * want) instead of a walk per lookup.
    """
    size = len(ring.points)
    owners, zones = ring.owners, ring.zones
    seq: list[tuple[int, NodeId]] = []
    for i in range(size):  # every zone owns a point, so one lap finds `want` zones
        if all(z != zones[i] for z, _ in seq):
            seq.append((zones[i], owners[i]))
            if len(seq) == want:
                break
    table: list[tuple[NodeId, ...]] = [()] * size
    for i in range(size - 1, -1, -1):
        zone = zones[i]
        seq = [(zone, owners[i]), *[p for p in seq if p[0] != zone][: want - 1]]
        table[i] = tuple(owner for _, owner in seq)
    return table


def replicas_for(
    oid: int, members: Membership, copies: int, *, allow_degraded: bool = False
) -> tuple[NodeId, ...]:
    """The ordered replica list of object `oid`: primary first, one node per zone.

    Returns exactly `copies` distinct nodes in distinct zones.  With fewer zones
    than copies it raises `NotEnoughZones`, or with `allow_degraded=True`
    returns one node from each zone.  An empty membership always raises.
    ValueError if `copies` < 1 or `oid` is not a u64.
    """
    if copies < 1:
        raise ValueError(f"copies is {copies}; it must be >= 1")
    ring = members._ring
    want = copies
    if copies > ring.zone_count:
        if not allow_degraded or ring.zone_count == 0:
            raise NotEnoughZones(copies, ring.zone_count)
        want = ring.zone_count
    i = bisect_left(ring.points, oid_point(oid))
    return members._table(want)[i if i < len(ring.points) else 0]
