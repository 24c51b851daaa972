"""The replicated cluster: object placement across nodes (more to come: nodes, recovery).

`placement` is pure: `replicas_for(oid, members, copies)` maps an object id and
one epoch's `Membership` to an ordered replica list.
"""

from . import placement
from .placement import (
    DEFAULT_VNODES_PER_WEIGHT,
    Membership,
    Node,
    NodeId,
    NotEnoughZones,
    PlacementError,
    replicas_for,
    vnodes_for,
)

__all__ = [
    "DEFAULT_VNODES_PER_WEIGHT",
    "Membership",
    "Node",
    "NodeId",
    "NotEnoughZones",
    "PlacementError",
    "placement",
    "replicas_for",
    "vnodes_for",
]
