"""Thin object-backed volumes with instant snapshots and clones (Sheepdog's model).

`VolumeLibrary` is the façade the node daemon and CLI call; `open` gives an
`ObjectVolume`, the BlockDevice to serve.  The object id layout and the inode
format are pure and public for tools that inspect a store.
"""

from ._catalog import Catalog, CatalogEntry, CatalogUnavailable, SqliteCatalog, VolumeCatalog
from ._errors import (
    DataBeyondSize,
    InvalidVolumeArgument,
    NotASnapshot,
    SnapshotReadOnly,
    VolumeError,
    VolumeExists,
    VolumeInUse,
    VolumeIOError,
    VolumeNotFound,
)
from ._inode import DEFAULT_OBJECT_SIZE, Inode
from ._library import VolumeLibrary
from ._object_volume import ObjectVolume
from ._oid import MAX_INDEX, MAX_VID, ObjectId, ObjectKind, data_oid, inode_oid, parse_oid
from ._reclaim import GcReport
from ._reports import ChangedExtent, VolumeInfo, VolumeNode

__all__ = [
    "DEFAULT_OBJECT_SIZE",
    "MAX_INDEX",
    "MAX_VID",
    "Catalog",
    "CatalogEntry",
    "CatalogUnavailable",
    "ChangedExtent",
    "DataBeyondSize",
    "GcReport",
    "Inode",
    "InvalidVolumeArgument",
    "NotASnapshot",
    "ObjectId",
    "ObjectKind",
    "ObjectVolume",
    "SnapshotReadOnly",
    "SqliteCatalog",
    "VolumeCatalog",
    "VolumeError",
    "VolumeExists",
    "VolumeIOError",
    "VolumeInUse",
    "VolumeInfo",
    "VolumeLibrary",
    "VolumeNode",
    "VolumeNotFound",
    "data_oid",
    "inode_oid",
    "parse_oid",
]
