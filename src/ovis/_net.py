"""Socket options every TCP connection of ovis sets."""

from __future__ import annotations

import contextlib
import socket
from typing import Protocol


class _HasExtraInfo(Protocol):
    def get_extra_info(self, name: str, default: object = None) -> object: ...


def set_nodelay(transport: _HasExtraInfo) -> None:
    """TCP_NODELAY on a TCP connection (transport or StreamWriter); Unix sockets are left."""
    sock = transport.get_extra_info("socket")
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
