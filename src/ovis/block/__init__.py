"""The block layer: one BlockDevice interface, leaves and stackable filters.

A stack is a leaf (file, memory, a remote NBD export) under filters (read-only, copy-on-write,
fault injection), wrapped once in `CheckedDevice`, which is where every
request is checked.  `ovis.block.testing.check_block_device` is the
conformance suite every device must pass.
"""

from ovis.block._checked import CheckedDevice
from ovis.block._cow import CowFilter
from ovis.block._device import (
    BlockDevice,
    BlockError,
    Capabilities,
    Extent,
    Filter,
    Transparent,
)
from ovis.block._faults import DelayFilter, ErrorFilter
from ovis.block._file import FileDevice
from ovis.block._memory import MemoryDevice
from ovis.block._nbd import NbdDevice
from ovis.block._readonly import ReadOnlyFilter

__all__ = [
    "BlockDevice",
    "BlockError",
    "Capabilities",
    "CheckedDevice",
    "CowFilter",
    "DelayFilter",
    "ErrorFilter",
    "Extent",
    "FileDevice",
    "Filter",
    "MemoryDevice",
    "NbdDevice",
    "ReadOnlyFilter",
    "Transparent",
]
