"""The values attach leases are made of: who holds a volume, and migration windows.

Kept apart from the AttachLeases machinery (_attach.py) so that readers of
attachments (the node's API, its NBD handshake) need not import it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time

from ovis.coord import Session
from ovis.volume._errors import VolumeInUse


class AttachedElsewhere(VolumeInUse):
    """Another node (or an earlier session of this one) holds the volume read-write."""

    def __init__(self, message: str, name: str, node: str) -> None:
        super().__init__(message)
        self.name = name
        self.node = node


@dataclasses.dataclass(frozen=True, slots=True)
class MigrationWindow:
    """`name` may have a second writer on `to_node` while `from_node` holds it, until then."""

    name: str
    from_node: str
    to_node: str
    until_ns: int

    def open(self, now_ns: int | None = None) -> bool:
        return (time.time_ns() if now_ns is None else now_ns) < self.until_ns

    @property
    def pair(self) -> tuple[str, str]:
        return self.from_node, self.to_node

    def encode(self) -> bytes:
        return json.dumps(
            {"from": self.from_node, "to": self.to_node, "until_ns": self.until_ns}
        ).encode()

    @classmethod
    def decode(cls, name: str, raw: bytes) -> MigrationWindow | None:
        try:
            data = json.loads(raw)
            return cls(name, str(data["from"]), str(data["to"]), int(data["until_ns"]))
        except (ValueError, TypeError, KeyError):
            return None


@dataclasses.dataclass(frozen=True, slots=True)
class AttachInfo:
    """Who holds `name` read-write, since when, with which token; any migration under way."""

    name: str
    node: str
    token: int
    since_ns: int
    incoming: tuple[str, int] | None = None  # (node, token) of the migration's destination
    window: MigrationWindow | None = None


class Attachment:
    """This node's read-write hold on one volume.

    `token` is the fencing token (it changes once, on promotion).  `lost` is
    set when the attachment stops guaranteeing a single writer (lease gone,
    session lost, window closed, detached), with `reason` saying why: refuse
    writes from then on.  `promoted` is set when an incoming (migration)
    attachment becomes the holder: raise the fence to the new token.
    """

    def __init__(
        self, name: str, node: str, token: int, since_ns: int, session: Session, key: str
    ) -> None:
        self.name = name
        self.node = node
        self.token = token
        self.since_ns = since_ns
        self.incoming = False
        self.window: MigrationWindow | None = None
        self.lost = asyncio.Event()
        self.promoted = asyncio.Event()
        self.reason = ""
        self._session = session
        self._key = key
        self._users = 1

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "incoming" if self.incoming else "held"
        return f"Attachment({self.name!r}, node={self.node!r}, token={self.token}, {state})"


def when(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def owner_value(node: str, since_ns: int) -> bytes:
    return json.dumps({"node": node, "since_ns": since_ns}).encode()


def parse_owner(raw: bytes) -> tuple[str, int]:
    try:
        data = json.loads(raw)
        return str(data["node"]), int(data["since_ns"])
    except (ValueError, TypeError, KeyError):
        return "?", 0
