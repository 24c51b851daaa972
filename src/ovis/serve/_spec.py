"""What one export is: the description `ovis serve` builds from flags or config."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ExportError(Exception):
    """An export cannot be added, found or changed; the message is one line for users."""


@dataclasses.dataclass(frozen=True, slots=True)
class ExportSpec:
    name: str
    path: str
    readonly: bool = False
    cow: bool = False
    cow_persist: str | None = None
    description: str = ""
    allow: tuple[Network, ...] = ()  # empty: everyone
    size: int | None = None
    # Proxy mode (xnbd --proxy): `path` is the local cache being filled from
    # the `proxy` source, with its bitmap of cached blocks at `bitmap`.
    proxy: str | None = None
    bitmap: str | None = None
    max_rate: float | None = None  # bytes/s for the background fill
    auto_switch: bool = False
    defer_fill: bool = False  # the fill waits for `ovis migrate fill` (xnbd-bgctl --cache-all)
    # One client host writes at a time (the handover of VM live migration).
    single_writer: bool = False

    @property
    def shared_state(self) -> bool:
        """True if connections share state that lives in this process only."""
        return self.cow_persist is not None or self.proxy is not None or self.single_writer

    def allows(self, peer: str | None) -> bool:
        if not self.allow or peer is None:  # unix-socket clients are local users
            return True
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "readonly": self.readonly,
            "cow": self.cow,
            "cow_persist": self.cow_persist,
            "description": self.description,
            "allow": [str(n) for n in self.allow],
            "size": self.size,
            "proxy": self.proxy,
            "bitmap": self.bitmap,
            "max_rate": self.max_rate,
            "auto_switch": self.auto_switch,
            "defer_fill": self.defer_fill,
            "single_writer": self.single_writer,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExportSpec:
        """The inverse of to_dict."""
        return cls(
            name=raw["name"],
            path=raw["path"],
            readonly=raw["readonly"],
            cow=raw["cow"],
            cow_persist=raw["cow_persist"],
            description=raw["description"],
            allow=tuple(ipaddress.ip_network(n) for n in raw["allow"]),
            size=raw["size"],
            proxy=raw.get("proxy"),
            bitmap=raw.get("bitmap"),
            max_rate=raw.get("max_rate"),
            auto_switch=raw.get("auto_switch", False),
            defer_fill=raw.get("defer_fill", False),
            single_writer=raw.get("single_writer", False),
        )
