"""The cluster's records in the Coordinator: config, epoch (with history), live nodes.

Keys::

    ovis/cluster       ClusterConfig JSON, written once by `ovis cluster format`
    ovis/epoch         the current Epoch JSON plus "history": its last 100 EpochRecords
    ovis/nodes/<id>    a live node's NodeInfo JSON, ephemeral (written with its session)

The epoch key only ever changes by compare-and-swap on its mod_revision
(ovis.cluster._membership), so epoch numbers are never reused and every
node that reads epoch N reads the same members.

Errors (one line each, for users)::

    ClusterError
    ├── NotFormatted      no ovis/cluster key: run `ovis cluster format`
    ├── AlreadyFormatted  format on a cluster that has a config
    └── NodeIdInUse       another live session holds ovis/nodes/<id>

Coordinator errors (Unavailable, ...) pass through untranslated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from typing import Any

from ovis.coord import CompareFailed, Coordinator, OutcomeUnknown

from ._model import Epoch, NodeInfo

KEY_CONFIG = "ovis/cluster"
KEY_EPOCH = "ovis/epoch"
PREFIX_NODES = "ovis/nodes/"
MAX_COPIES = 8
HISTORY_KEPT = 100

log = logging.getLogger("ovis.cluster")


class ClusterError(Exception):
    """A cluster-level failure whose message is one line for users."""


class NotFormatted(ClusterError):
    """The Coordinator holds no cluster config yet."""

    def __init__(self) -> None:
        super().__init__(
            "cluster not formatted: run `ovis cluster format --cluster URL --copies N`"
        )


class AlreadyFormatted(ClusterError):
    """`format_cluster` found a config already there (it is never overwritten)."""

    def __init__(self, existing: ClusterConfig) -> None:
        super().__init__(
            f"cluster already formatted (id {existing.cluster_id}, "
            f"{existing.copies} copies); its config is never overwritten"
        )
        self.existing = existing


class NodeIdInUse(ClusterError):
    """Another live session has registered this node id."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node id {node_id} is already live in the cluster (another process?)")
        self.node_id = node_id


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What `ovis cluster format` fixed: the cluster's id and its copy count."""

    cluster_id: str
    copies: int
    created_ns: int

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ClusterConfig:
        data = json.loads(raw)
        return cls(str(data["cluster_id"]), int(data["copies"]), int(data["created_ns"]))


@dataclasses.dataclass(frozen=True, slots=True)
class EpochRecord:
    """One epoch in the history: its members and why it started.

    `joined` and `left` are ids that entered or dropped out since the epoch
    before; `updated` are members that re-registered with other attributes
    (a restart on new ports, a new weight).
    """

    number: int
    started_ns: int
    members: tuple[str, ...]
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()

    @classmethod
    def between(cls, old: Epoch, new: Epoch) -> EpochRecord:
        """The record of `new`, which follows `old`."""
        changed = tuple(m.id for m in new.members if (o := old.member(m.id)) is not None and o != m)
        return cls(
            number=new.number,
            started_ns=new.started_ns,
            members=tuple(sorted(new.ids)),
            joined=tuple(sorted(new.ids - old.ids)),
            left=tuple(sorted(old.ids - new.ids)),
            updated=changed,
        )

    def change(self) -> str:
        """Why the epoch started, e.g. "joined n3; left n1" ("-" if nothing)."""
        parts = [
            f"{what} {', '.join(ids)}"
            for what, ids in (
                ("joined", self.joined),
                ("left", self.left),
                ("updated", self.updated),
            )
            if ids
        ]
        return "; ".join(parts) or "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.number,
            "started_ns": self.started_ns,
            "members": list(self.members),
            "joined": list(self.joined),
            "left": list(self.left),
            "updated": list(self.updated),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EpochRecord:
        return cls(
            number=int(raw["epoch"]),
            started_ns=int(raw.get("started_ns", 0)),
            members=tuple(str(i) for i in raw.get("members", ())),
            joined=tuple(str(i) for i in raw.get("joined", ())),
            left=tuple(str(i) for i in raw.get("left", ())),
            updated=tuple(str(i) for i in raw.get("updated", ())),
        )


def encode_epoch(epoch: Epoch, history: list[EpochRecord]) -> bytes:
    """The ovis/epoch value: the epoch and its last HISTORY_KEPT records (newest last)."""
    data = epoch.to_json()
    data["history"] = [r.to_json() for r in history[-HISTORY_KEPT:]]
    return json.dumps(data, sort_keys=True).encode()


def decode_epoch(raw: bytes) -> tuple[Epoch, list[EpochRecord]]:
    """Parse an ovis/epoch value (ValueError/KeyError/TypeError if it is not one)."""
    data = json.loads(raw)
    return Epoch.from_json(data), [EpochRecord.from_json(r) for r in data.get("history", ())]


def next_epoch(
    current: Epoch, history: list[EpochRecord], live: list[NodeInfo], copies: int
) -> bytes | None:
    """The ovis/epoch value that makes the `live` nodes epoch N+1, or None if none is due.

    None if `live` are exactly the current members (ids and NodeInfo), and
    if `live` is empty: an epoch never has zero members.
    """
    if not live or {m.id: m for m in live} == {m.id: m for m in current.members}:
        return None
    new = Epoch(current.number + 1, tuple(live), copies, time.time_ns())
    return encode_epoch(new, [*history, EpochRecord.between(current, new)])


async def format_cluster(coord: Coordinator, copies: int) -> ClusterConfig:
    """Write a new cluster config with `copies` copies of every object.

    Raises ValueError unless 1 <= copies <= 8, AlreadyFormatted if a config
    exists (whoever wrote it), and the Coordinator's errors.
    """
    if not 1 <= copies <= MAX_COPIES:
        raise ValueError(f"copies must be between 1 and {MAX_COPIES}, not {copies}")
    config = ClusterConfig(uuid.uuid4().hex, copies, time.time_ns())
    try:
        await coord.put_if(KEY_CONFIG, config.encode(), 0)
    except CompareFailed:
        raise AlreadyFormatted(await load_config(coord)) from None
    except OutcomeUnknown:
        existing = await load_config(coord)
        if existing != config:
            raise AlreadyFormatted(existing) from None
    log.info("formatted cluster %s with %d copies", config.cluster_id, copies)
    return config


async def load_config(coord: Coordinator) -> ClusterConfig:
    """The cluster's config; raises NotFormatted if there is none."""
    kv = await coord.get(KEY_CONFIG)
    if kv is None:
        raise NotFormatted()
    return ClusterConfig.decode(kv.value)


async def read_epoch(coord: Coordinator) -> tuple[Epoch, list[EpochRecord], int]:
    """The current epoch, its history (newest last) and the epoch key's mod_revision.

    Before the first node has joined: Epoch(0, (), copies), no history,
    revision 0.  Raises NotFormatted if the cluster has no config.
    """
    kv = await coord.get(KEY_EPOCH)
    if kv is None:
        return Epoch(0, (), (await load_config(coord)).copies), [], 0
    epoch, history = decode_epoch(kv.value)
    return epoch, history, kv.mod_revision


def decode_node(key: str, raw: bytes) -> NodeInfo | None:
    """The NodeInfo at ovis/nodes/<id>, or None (logged) if it is not a valid one."""
    try:
        info = NodeInfo.decode(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: not a node registration (%s)", key, exc)
        return None
    if key != PREFIX_NODES + info.id:
        log.warning("ignoring %s: it registers node %r", key, info.id)
        return None
    return info


async def live_nodes(coord: Coordinator) -> list[NodeInfo]:
    """The nodes registered now (with a live session), sorted by id."""
    kvs, _ = await coord.list(PREFIX_NODES)
    nodes = [decode_node(kv.key, kv.value) for kv in kvs]
    return sorted((n for n in nodes if n is not None), key=lambda n: n.id)
