"""The cluster's shared vocabulary: nodes, epochs, the errors replicas return.

Every other cluster module speaks in these terms:

- `NodeInfo`: a live node as it registers itself in the Coordinator (key
  `ovis/nodes/<id>`, ephemeral: it vanishes when the node's session ends).
- `Epoch`: one numbered membership, committed in the Coordinator with a
  compare-and-swap on the key `ovis/epoch`.  Placement is a pure function of the
  epoch's members, so every node that knows epoch N computes the same replica
  list for every object.
- `ClusterView`: what the storage side needs from the membership side (the
  current epoch, a way to wait for a newer one, and whether this node may
  still accept writes, i.e. its session is alive).

Errors are `BlockError`s, so they reach an NBD client as an errno if nothing
handles them: WrongEpoch and NotAccepting are retried by the gateway, Fenced
is final (the writer has lost the volume), PeerUnavailable is retried once the
epoch has moved past the silent node.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any

from ovis.block._device import BlockError
from ovis.nbd._constants import Errno

from .placement import Membership, Node, NodeId, replicas_for


@dataclasses.dataclass(frozen=True, slots=True)
class NodeInfo:
    """A cluster node: its identity, placement attributes and addresses.

    `peer` is HOST:PORT of its replica service, `nbd` HOST:PORT of its NBD
    server, `api` the URL of its management API (loopback).
    """

    id: str
    zone: str
    weight: float
    peer: str
    nbd: str = ""
    api: str = ""

    def placement(self) -> Node:
        return Node(NodeId(self.id), self.zone, self.weight)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NodeInfo:
        return cls(
            id=str(raw["id"]),
            zone=str(raw["zone"]),
            weight=float(raw["weight"]),
            peer=str(raw["peer"]),
            nbd=str(raw.get("nbd", "")),
            api=str(raw.get("api", "")),
        )

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> NodeInfo:
        return cls.from_json(json.loads(raw))


@dataclasses.dataclass(frozen=True)
class Epoch:
    """Epoch `number`: its members and the copy count, hence every object's replicas.

    Epoch 0 is "not joined yet": no members, every lookup fails.
    """

    number: int
    members: tuple[NodeInfo, ...]
    copies: int
    started_ns: int = 0
    membership: Membership = dataclasses.field(init=False, repr=False, compare=False)
    _by_id: dict[str, NodeInfo] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        members = tuple(sorted(self.members, key=lambda m: m.id))
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "membership", Membership(tuple(m.placement() for m in members)))
        object.__setattr__(self, "_by_id", {m.id: m for m in members})

    def replicas(self, oid: int) -> tuple[NodeInfo, ...]:
        """The object's replicas in this epoch, primary first (copies, or one per zone)."""
        ids = replicas_for(oid, self.membership, self.copies, allow_degraded=True)
        return tuple(self._by_id[i] for i in ids)

    def member(self, node_id: str) -> NodeInfo | None:
        return self._by_id.get(node_id)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.number,
            "copies": self.copies,
            "started_ns": self.started_ns,
            "members": [m.to_json() for m in self.members],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Epoch:
        return cls(
            number=int(raw["epoch"]),
            members=tuple(NodeInfo.from_json(m) for m in raw["members"]),
            copies=int(raw["copies"]),
            started_ns=int(raw.get("started_ns", 0)),
        )


class ClusterView(abc.ABC):
    """What storage needs from membership (implemented by ovis.cluster.ClusterNode)."""

    @property
    @abc.abstractmethod
    def node_id(self) -> str:
        """This node's id."""

    @property
    @abc.abstractmethod
    def epoch(self) -> Epoch:
        """The newest epoch this node knows (epoch 0 before it has joined)."""

    @abc.abstractmethod
    async def wait_epoch(self, after: int, timeout: float | None = None) -> Epoch:
        """Return the current epoch once its number is > `after`.

        Raises TimeoutError after `timeout` seconds.
        """

    @abc.abstractmethod
    def accepting_writes(self) -> bool:
        """False once this node's session may have expired: it must not take writes."""


# -- errors replicas return -----------------------------------------------------


class WrongEpoch(BlockError):
    """The replica is on another epoch: the sender catches up (or waits) and retries."""

    def __init__(self, theirs: int, ours: int) -> None:
        super().__init__(Errno.EIO, f"replica is on epoch {theirs}, request carried {ours}")
        self.theirs = theirs
        self.ours = ours


class Fenced(BlockError):
    """A write carried a fencing token older than one the replica has seen: final."""

    def __init__(self, vid: int, token: int, newest: int) -> None:
        super().__init__(
            Errno.EPERM,
            f"volume {vid}: fencing token {token} is older than {newest}; "
            "another node has attached the volume read-write",
        )
        self.vid = vid
        self.token = token
        self.newest = newest


class NotAccepting(BlockError):
    """The replica is not taking writes now (cut off from quorum, or stopping)."""

    def __init__(self, why: str) -> None:
        super().__init__(Errno.ESHUTDOWN, why)


class PeerUnavailable(BlockError):
    """The replica did not answer (refused, reset, timed out)."""

    def __init__(self, peer: str, why: str) -> None:
        super().__init__(Errno.EIO, f"replica {peer} is unavailable: {why}")
        self.peer = peer
