"""The `ovis serve --config FILE` format: one TOML table per export.

    default = "disk"            # optional: the export that answers the empty name

    [exports.disk]
    path = "/srv/disk.img"
    description = "boot disk"
    readonly = false
    cow = false                 # private throw-away overlay per connection
    cow_persist = "/srv/disk.overlay"   # optional: one overlay, kept
    allow = ["127.0.0.1", "10.0.0.0/8"] # optional allow-list (addresses or CIDR)
    size = "10G"                # optional: override the size, as nbd-server's size argument
    single_writer = true        # one client host writes at a time (see docs/migration.md)

Unknown keys are errors, so a typo never silently changes what is served.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from ovis._units import parse_size

from ._spec import ExportSpec, Network

_EXPORT_KEYS = {
    "path",
    "description",
    "readonly",
    "cow",
    "cow_persist",
    "allow",
    "size",
    "single_writer",
}


class ConfigError(Exception):
    """The config file is unreadable or wrong; the message says where and how to fix it."""


def parse_allow(entries: list[str] | tuple[str, ...], where: str) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry), strict=False))
        except ValueError:
            raise ConfigError(f"{where}: {entry!r} is not an address or CIDR network") from None
    return tuple(networks)


def load_config(path: str | Path) -> tuple[list[ExportSpec], str | None]:
    """The exports in the file and the default export name."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"default", "exports"}
    if unknown:
        raise ConfigError(f"config {path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    tables = document.get("exports", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"config {path}: no [exports.NAME] tables")
    specs = [_export(name, table, f"{path}: [exports.{name}]") for name, table in tables.items()]
    default = document.get("default")
    if default is not None and default not in tables:
        raise ConfigError(f"config {path}: default export {default!r} is not defined")
    return specs, default


def _export(name: str, table: Any, where: str) -> ExportSpec:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - _EXPORT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "path" not in table:
        raise ConfigError(f"{where}: missing 'path'")
    try:
        size = parse_size(table["size"]) if "size" in table else None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    allow = table.get("allow", [])
    if isinstance(allow, str):
        allow = [allow]
    for key in ("readonly", "cow", "single_writer"):
        if not isinstance(table.get(key, False), bool):
            raise ConfigError(f"{where}: {key} must be true or false")
    return ExportSpec(
        name=name,
        path=str(table["path"]),
        readonly=table.get("readonly", False),
        cow=table.get("cow", False) or "cow_persist" in table,
        cow_persist=table.get("cow_persist"),
        description=str(table.get("description", "")),
        allow=parse_allow(allow, where),
        size=size,
        single_writer=table.get("single_writer", False),
    )
