"""Simulate ovis placement at cluster scale: load spread, and data moved by a join and a leave.

    python bench/placement_sim.py --nodes 1000 --objects 1000000 --copies 3 --zones 10

Places every object with `ovis.cluster.replicas_for` (the real code, not a
model), then adds one node and, separately, removes one, and compares the
replica lists.  Node i is in zone i % zones with weight weights[i // zones % len],
so every zone gets the same mix of weights (`--weight-by-zone` makes the zones
unequal instead, to measure what that costs); the
objects are data objects of 4 GiB volumes (1,024 objects each), so their oids
are as contiguous as a real cluster's.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence

from ovis.cluster import Membership, Node, NodeId, replicas_for
from ovis.volume import data_oid

OBJECTS_PER_VOLUME = 1024

Placement = list[tuple[NodeId, ...]]


def build_membership(
    nodes: int, zones: int, weights: Sequence[float], vnodes: int, by_zone: bool = False
) -> Membership:
    def weight(i: int) -> float:
        return weights[(i % zones if by_zone else i // zones) % len(weights)]

    return Membership(
        tuple(
            Node(NodeId(f"node{i:05d}"), f"zone{i % zones:03d}", weight(i)) for i in range(nodes)
        ),
        vnodes,
    )


def object_ids(count: int) -> list[int]:
    return [data_oid(1 + k // OBJECTS_PER_VOLUME, k % OBJECTS_PER_VOLUME) for k in range(count)]


def place(oids: list[int], members: Membership, copies: int) -> tuple[Placement, float]:
    replicas_for(0, members, copies)  # builds the per-position table, timed apart
    start = time.perf_counter()
    placement = [replicas_for(oid, members, copies) for oid in oids]
    return placement, (time.perf_counter() - start) / len(oids) * 1e6


def spread(placement: Placement, members: Membership) -> dict[str, float]:
    """Replicas per node divided by the node's weighted fair share: 1.0 is perfect."""
    load = Counter(node for replicas in placement for node in replicas)
    total = sum(load.values())
    weight = sum(n.weight for n in members.nodes)
    norm = [load[n.id] / (total * n.weight / weight) for n in members.nodes]
    mean = sum(norm) / len(norm)
    std = math.sqrt(sum((x - mean) ** 2 for x in norm) / len(norm))
    primaries = Counter(replicas[0] for replicas in placement)
    pnorm = [primaries[n.id] / (len(placement) * n.weight / weight) for n in members.nodes]
    by_weight: dict[float, list[float]] = {}
    for n, x in zip(members.nodes, norm, strict=True):
        by_weight.setdefault(n.weight, []).append(x)
    return {
        **{f"weight_{w:g}_mean": sum(xs) / len(xs) for w, xs in sorted(by_weight.items())},
        "max_over_mean": max(norm) / mean,
        "min_over_mean": min(norm) / mean,
        "stddev_over_mean": std / mean,
        "primary_max_over_mean": max(pnorm) / (sum(pnorm) / len(pnorm)),
    }


def movement(before: Placement, after: Placement, copies: int) -> tuple[float, float, int]:
    """(fraction of replicas that land on a new node, fraction of objects touched, moves)."""
    moved_replicas = touched = 0
    for old, new in zip(before, after, strict=True):
        if old != new:
            touched += 1
            moved_replicas += len(set(new) - set(old))
    return moved_replicas / (len(before) * copies), touched / len(before), moved_replicas


def run(args: argparse.Namespace) -> dict[str, object]:
    weights = [float(w) for w in args.weights.split(",")]
    t0 = time.perf_counter()
    members = build_membership(args.nodes, args.zones, weights, args.vnodes, args.weight_by_zone)
    t1 = time.perf_counter()
    replicas_for(0, members, args.copies)
    t2 = time.perf_counter()
    oids = object_ids(args.objects)
    before, lookup_us = place(oids, members, args.copies)
    total_weight = sum(n.weight for n in members.nodes)
    out: dict[str, object] = {
        "nodes": args.nodes,
        "objects": args.objects,
        "copies": args.copies,
        "zones": args.zones,
        "weights": weights,
        "vnodes_per_weight": args.vnodes,
        "ring_points": members.ring_size,
        "ring_build_s": t1 - t0,
        "table_build_s": t2 - t1,
        "lookup_us": lookup_us,
        "spread": spread(before, members),
    }

    joiner = Node(NodeId("joiner"), f"zone{args.nodes % args.zones:03d}", weights[0])
    after_join, _ = place(oids, members.with_node(joiner), args.copies)
    moved, touched, _ = movement(before, after_join, args.copies)
    misplaced = sum(
        1 for o, n in zip(before, after_join, strict=True) if o != n and joiner.id not in n
    )
    share = joiner.weight / (total_weight + joiner.weight)
    out["join"] = {
        "replicas_moved": moved,
        "ideal_replicas_moved": share,
        "objects_touched": touched,
        "ideal_objects_touched": min(1.0, args.copies * share),
        "moves_not_onto_joiner": misplaced,
    }

    leaver = members.nodes[args.nodes // 2]
    after_leave, _ = place(oids, members.without(leaver.id), args.copies)
    moved, touched, count = movement(before, after_leave, args.copies)
    held = sum(1 for replicas in before if leaver.id in replicas)
    share = leaver.weight / total_weight
    out["leave"] = {
        "replicas_moved": moved,
        "ideal_replicas_moved": share,
        "objects_touched": touched,
        "ideal_objects_touched": min(1.0, args.copies * share),
        "moves_beyond_leavers_replicas": count - held,
    }
    out["total_s"] = time.perf_counter() - t0
    return out


def report(r: dict[str, object]) -> str:
    s = r["spread"]
    j = r["join"]
    v = r["leave"]
    assert isinstance(s, dict) and isinstance(j, dict) and isinstance(v, dict)
    lines = [
        f"placement: {r['nodes']} nodes in {r['zones']} zones, weights {r['weights']}, "
        f"{r['objects']} objects x {r['copies']} copies, {r['vnodes_per_weight']} vnodes/weight "
        f"({r['ring_points']} ring points)",
        f"  ring build {r['ring_build_s']:.2f} s, table build {r['table_build_s']:.2f} s, "
        f"lookup {r['lookup_us']:.2f} us/object, whole run {r['total_s']:.0f} s",
        "  load per node / weighted fair share: "
        f"max/mean {s['max_over_mean']:.3f}  min/mean {s['min_over_mean']:.3f}  "
        f"stddev/mean {s['stddev_over_mean']:.3f}  (primaries max/mean "
        f"{s['primary_max_over_mean']:.3f})",
        "  mean load / fair share by weight: "
        + "  ".join(f"{k[7:-5]}: {x:.3f}" for k, x in s.items() if k.startswith("weight_")),
    ]
    for name, d, extra in (
        ("join ", j, f"moves not onto the joiner {j['moves_not_onto_joiner']}"),
        ("leave", v, f"moves beyond the leaver's replicas {v['moves_beyond_leavers_replicas']}"),
    ):
        lines.append(
            f"  {name}: replicas moved {d['replicas_moved']:.5f} "
            f"(ideal 1/N {d['ideal_replicas_moved']:.5f},"
            f" x{d['replicas_moved'] / d['ideal_replicas_moved']:.2f}); objects touched "
            f"{d['objects_touched']:.5f} (ideal copies/N {d['ideal_objects_touched']:.5f}, "
            f"x{d['objects_touched'] / d['ideal_objects_touched']:.2f}); {extra}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--objects", type=int, default=1_000_000)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--zones", type=int, default=10)
    p.add_argument("--weights", default="1", help="comma-separated, cycled over nodes: 1,2,4")
    p.add_argument(
        "--weight-by-zone",
        action="store_true",
        help="give every node of zone z weights[z % len]: unequal zones, to measure their skew",
    )
    p.add_argument("--vnodes", type=int, default=128, help="ring points per unit of weight")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = p.parse_args(argv)
    if args.zones < args.copies or args.nodes < args.zones:
        p.error("need nodes >= zones >= copies")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
