"""The replicated cluster: Sheepdog's placement and recovery with DRBD's guarantees.

- `placement`: `replicas_for(oid, members, copies)`, a pure function (consistent
  hashing, capacity-weighted vnodes, one copy per zone).
- Membership (`ClusterNode`, `format_cluster`, `load_config`): nodes register
  in the Coordinator with their session; epochs are compare-and-swapped there.
- Storage (`StorageService`, `PeerServer`, `PeerPool`): each node's object
  store behind epoch, quorum and fencing checks, reachable by its peers.
- `ReplicatedObjectStore`: the gateway, an ObjectStore whose mutations reach
  every replica of the epoch before they return (protocol C).
- `Recovery`, `ReplicaChecker`: bring copies back after epoch changes; compare
  and repair replicas.
- `CoordinatorCatalog`, `AttachLeases`: volume names and single-writer leases
  (fencing tokens) in the Coordinator.

docs/cluster.md explains how the pieces fit and what each guarantees.
"""

from . import placement
from ._attach import AttachLeases
from ._attach_model import AttachedElsewhere, AttachInfo, Attachment, MigrationWindow
from ._catalog import CoordinatorCatalog
from ._check import CheckReport, ReplicaChecker
from ._config import (
    KEY_CONFIG,
    KEY_EPOCH,
    PREFIX_NODES,
    AlreadyFormatted,
    ClusterConfig,
    ClusterError,
    EpochRecord,
    NodeIdInUse,
    NotFormatted,
    format_cluster,
    live_nodes,
    load_config,
    read_epoch,
)
from ._gateway import ReplicatedObjectStore
from ._membership import ClusterNode
from ._model import (
    ClusterView,
    Epoch,
    Fenced,
    NodeInfo,
    NotAccepting,
    PeerUnavailable,
    WrongEpoch,
)
from ._peer_client import PeerPool
from ._peer_server import PeerServer
from ._recovery import Recovery
from ._service import MANAGEMENT_TOKEN, StorageService
from ._wire import PeerProtocolError
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
    "KEY_CONFIG",
    "KEY_EPOCH",
    "MANAGEMENT_TOKEN",
    "PREFIX_NODES",
    "AlreadyFormatted",
    "AttachInfo",
    "AttachLeases",
    "AttachedElsewhere",
    "Attachment",
    "CheckReport",
    "ClusterConfig",
    "ClusterError",
    "ClusterNode",
    "ClusterView",
    "CoordinatorCatalog",
    "Epoch",
    "EpochRecord",
    "Fenced",
    "Membership",
    "MigrationWindow",
    "Node",
    "NodeId",
    "NodeIdInUse",
    "NodeInfo",
    "NotAccepting",
    "NotEnoughZones",
    "NotFormatted",
    "PeerPool",
    "PeerProtocolError",
    "PeerServer",
    "PeerUnavailable",
    "PlacementError",
    "Recovery",
    "ReplicaChecker",
    "ReplicatedObjectStore",
    "StorageService",
    "WrongEpoch",
    "format_cluster",
    "live_nodes",
    "load_config",
    "placement",
    "read_epoch",
    "replicas_for",
    "vnodes_for",
]
