"""Coordination: sessions, revisions, compare-and-swap, watches and fencing locks.

`Coordinator` is the interface (its docstrings are the contract).
`SqliteCoordinator` is the embedded single-node default (one SQLite file, no
extra process); `EtcdCoordinator` talks to an etcd v3 cluster over its JSON
gateway and fails over between members.  `ovis.coord.testing` holds
`check_coordinator`, the conformance suite both pass.  `open_coordinator(url)`
picks one from a URL (etcd://HOST:PORT,... or sqlite:PATH).
"""

from ._etcd import EtcdCoordinator
from ._interface import (
    Compacted,
    CompareFailed,
    Coordinator,
    CoordinatorClosed,
    CoordinatorError,
    KeyValue,
    OutcomeUnknown,
    Session,
    SessionLost,
    Unavailable,
    WatchEvent,
)
from ._open import open_coordinator
from ._sqlite import SqliteCoordinator

__all__ = [
    "Compacted",
    "CompareFailed",
    "Coordinator",
    "CoordinatorClosed",
    "CoordinatorError",
    "EtcdCoordinator",
    "KeyValue",
    "OutcomeUnknown",
    "Session",
    "SessionLost",
    "SqliteCoordinator",
    "Unavailable",
    "WatchEvent",
    "open_coordinator",
]
