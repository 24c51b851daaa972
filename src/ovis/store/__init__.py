"""Object stores: named, versioned, checksummed objects under the volume layer.

`ObjectStore` is the interface (its docstrings are the contract);
`LocalObjectStore` keeps one sparse file per object, and `MemoryObjectStore`
is the test backend with simulated crashes.  `ovis.store.testing` holds the
conformance suite every store must pass and a fault injector.
"""

from ._interface import (
    MAX_OBJECT_SIZE,
    MAX_VERSION,
    ChecksumError,
    ObjectNotFound,
    ObjectStat,
    ObjectStore,
    StaleVersion,
    StoreClosed,
)
from ._keyed_lock import KeyedLock
from ._local import LocalObjectStore, StoreInUse
from ._memory import MemoryObjectStore

__all__ = [
    "MAX_OBJECT_SIZE",
    "MAX_VERSION",
    "ChecksumError",
    "KeyedLock",
    "LocalObjectStore",
    "MemoryObjectStore",
    "ObjectNotFound",
    "ObjectStat",
    "ObjectStore",
    "StaleVersion",
    "StoreClosed",
    "StoreInUse",
]
