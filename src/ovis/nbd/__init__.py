"""The NBD protocol without I/O: constants, events and state machines.

The asyncio shells live in `ovis.nbd.server` and `ovis.nbd.client`; they are
not imported here so that lower layers (block/) can use the constants.
"""

from ._catalog import ExportCatalog, ExportInfo
from ._constants import (
    BASE_ALLOCATION,
    DEFAULT_PORT,
    ChunkType,
    Command,
    CommandFlag,
    Errno,
    Info,
    Option,
    Reply,
    StateFlag,
    TransmissionFlag,
)
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    BlockStatusChunk,
    DataChunk,
    DoneChunk,
    ErrorChunk,
    HoleChunk,
    Request,
    SimpleReply,
)
from ._handshake_client import ClientHandshake, Connected, Described, ExportDetails, Goal, Listed
from ._handshake_server import (
    Aborted,
    Ready,
    ServerHandshake,
    StartTLS,
    TLSMode,
)
from ._transmission import ServerTransmission
from ._transmission_client import ClientTransmission

__all__ = [
    "BASE_ALLOCATION",
    "DEFAULT_PORT",
    "NEED_DATA",
    "Aborted",
    "BlockStatusChunk",
    "ChunkType",
    "ClientHandshake",
    "ClientTransmission",
    "Command",
    "CommandFlag",
    "Connected",
    "DataChunk",
    "Described",
    "DoneChunk",
    "Errno",
    "ErrorChunk",
    "ExportCatalog",
    "ExportDetails",
    "ExportInfo",
    "Goal",
    "HoleChunk",
    "Info",
    "Listed",
    "LocalProtocolError",
    "Option",
    "ProtocolError",
    "Ready",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "ServerHandshake",
    "ServerTransmission",
    "SimpleReply",
    "StartTLS",
    "StateFlag",
    "TLSMode",
    "TransmissionFlag",
]
