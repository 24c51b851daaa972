"""`ovis vdi`: manage a running node's volumes (Sheepdog's `dog vdi`).

Each command is one call to the node's management API (--node, env
OVIS_NODE); import, export, diff and apply-diff also move data through the
node's NBD export (_vdi_copy.py, _vdi_diff.py).  Human output is plain
aligned text; --json prints what the API returned, for scripts.
"""

from __future__ import annotations

from typing import Any

import click

from ovis._units import format_size

from ._vdi_api import (
    VOLUME_HEADERS,
    VOLUME_RIGHT,
    ApiError,
    NodeApi,
    Volume,
    json_option,
    node_option,
    print_json,
    size_argument,
    table,
    volume_row,
    volume_summary,
    when,
)
from ._vdi_cluster import attach, check
from ._vdi_copy import export_command, import_command
from ._vdi_diff import apply_diff_command, diff_command


@click.group()
def vdi() -> None:
    """Manage volumes on a running node: create, snapshot, clone, copy in and out."""


@vdi.command()
@click.argument("name")
@click.argument("size")
@click.option("--object-size", help="Object size, a power of two (default 4M).")
@node_option
@json_option
def create(name: str, size: str, object_size: str | None, node_url: str, as_json: bool) -> None:
    """Create a thin volume NAME of SIZE bytes (K/M/G/T suffixes)."""
    obj = size_argument(object_size, "object size") if object_size else None
    volume = NodeApi(node_url).create(name, size_argument(size), obj)
    print_json(volume) if as_json else click.echo(volume_summary("created", volume))


@vdi.command(name="list")
@node_option
@json_option
def list_volumes(node_url: str, as_json: bool) -> None:
    """List volumes and their snapshots (NAME@TAG)."""
    volumes = NodeApi(node_url).volumes()
    if as_json:
        print_json(volumes)
    elif volumes:
        click.echo(table(VOLUME_HEADERS, [volume_row(v) for v in volumes], VOLUME_RIGHT))


@vdi.command()
@click.argument("spec", metavar="NAME[@TAG]")
@node_option
@json_option
def info(spec: str, node_url: str, as_json: bool) -> None:
    """Show one volume or snapshot."""
    api = NodeApi(node_url)
    volume = api.info(spec)
    if as_json:
        print_json(volume)
        return
    rows = [
        ("name", volume["spec"]),
        ("kind", "snapshot (read-only)" if volume["snapshot"] else "volume"),
        ("size", f"{format_size(volume['size'])} ({volume['size']} bytes)"),
        ("used", format_size(volume["used_bytes"])),
        ("shared", format_size(volume["shared_bytes"])),
        ("object size", format_size(volume["object_size"])),
        ("created", when(volume["created"])),
        ("vid", f"{volume['vid']:#x}"),
        ("parent vid", f"{volume['parent_vid']:#x}" if volume["parent_vid"] else "-"),
        ("nbd", f"{api.nbd_uri(volume['spec'])} ({volume['connections']} connected)"),
    ]
    if not volume["snapshot"]:
        rows.insert(5, ("snapshots", str(volume["snapshot_count"])))
    click.echo("\n".join(f"{key + ':':<12} {value}" for key, value in rows))


@vdi.command()
@click.argument("name")
@click.option("--tag", help="Snapshot tag (default: the time, e.g. 20240501T120000Z).")
@node_option
@json_option
def snapshot(name: str, tag: str | None, node_url: str, as_json: bool) -> None:
    """Snapshot volume NAME as NAME@TAG (instant; the volume may be in use)."""
    volume = NodeApi(node_url).snapshot(name, tag)
    print_json(volume) if as_json else click.echo(f"snapshot {volume['spec']}")


@vdi.command()
@click.argument("snapshot", metavar="NAME@TAG")
@click.argument("new_name", metavar="NEWNAME")
@node_option
@json_option
def clone(snapshot: str, new_name: str, node_url: str, as_json: bool) -> None:
    """Make NEWNAME, a writable volume sharing the snapshot's data."""
    if "@" not in snapshot:
        raise click.ClickException(f"clone needs a snapshot NAME@TAG, not {snapshot!r}")
    volume = NodeApi(node_url).clone(snapshot, new_name)
    print_json(volume) if as_json else click.echo(volume_summary(f"cloned {snapshot} as", volume))


@vdi.command()
@click.argument("name")
@click.option("--to", "tag", required=True, help="The snapshot tag to go back to.")
@node_option
@json_option
def rollback(name: str, tag: str, node_url: str, as_json: bool) -> None:
    """Make NAME hold NAME@TAG again, discarding what it holds now."""
    volume = NodeApi(node_url).rollback(name, tag)
    print_json(volume) if as_json else click.echo(f"rolled {name} back to {name}@{tag}")


@vdi.command()
@click.argument("name")
@click.argument("size")
@click.option("--force", is_flag=True, help="Allow a shrink that drops written data.")
@node_option
@json_option
def resize(name: str, size: str, force: bool, node_url: str, as_json: bool) -> None:
    """Grow or shrink volume NAME to SIZE."""
    try:
        volume = NodeApi(node_url).resize(name, size_argument(size), force)
    except ApiError as exc:
        if exc.kind == "data-beyond-size":
            raise ApiError(exc.status, f"{exc.message} (use --force)", exc.kind) from None
        raise
    print_json(volume) if as_json else click.echo(volume_summary("resized", volume))


@vdi.command()
@click.argument("spec", metavar="NAME[@TAG]")
@node_option
@json_option
def delete(spec: str, node_url: str, as_json: bool) -> None:
    """Delete NAME with all its snapshots, or the one snapshot NAME@TAG."""
    result = NodeApi(node_url).delete(spec)
    print_json(result) if as_json else click.echo(f"deleted {spec}")


@vdi.command()
@node_option
@json_option
def tree(node_url: str, as_json: bool) -> None:
    """Show snapshot chains and the clones that branch off them."""
    roots = NodeApi(node_url).tree()
    if as_json:
        print_json(roots)
        return
    lines: list[str] = []
    for root in roots:
        _draw(root, "", "", lines)
    if lines:
        click.echo("\n".join(lines))


def _draw(node: dict[str, Any], lead: str, rest: str, lines: list[str]) -> None:
    state = "" if node["snapshot"] else "  (working)"
    lines.append(f"{lead}{node['spec']}  [{when(node['created'])}]{state}")
    children = node["children"]
    for i, child in enumerate(children):
        last = i == len(children) - 1
        _draw(
            child, rest + ("└── " if last else "├── "), rest + ("    " if last else "│   "), lines
        )


@vdi.command()
@node_option
@json_option
def gc(node_url: str, as_json: bool) -> None:
    """Remove objects no volume names (leaked by crashes)."""
    report = NodeApi(node_url).gc()
    print_json(report) if as_json else click.echo(
        f"removed {report['removed']} objects, kept {report['kept']}"
    )


vdi.add_command(import_command)
vdi.add_command(export_command)
vdi.add_command(diff_command)
vdi.add_command(apply_diff_command)
vdi.add_command(attach)
vdi.add_command(check)

__all__ = ["Volume", "vdi"]
