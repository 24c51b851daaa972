"""Protocol errors say whose fault they are.

ProtocolError
├── LocalProtocolError   we misused the protocol object (a bug on our side)
└── RemoteProtocolError  the peer sent bytes the protocol does not allow;
                         the only safe reaction is to close the connection
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of all NBD protocol errors."""


class LocalProtocolError(ProtocolError):
    """Our own code asked the protocol object to do something illegal."""


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol; close the connection."""
