"""`ovis export add|remove|list|snapshot|handover|writer`: change a running `ovis serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ovis.serve import ControlError, control_request, default_control_path

_control_option = click.option(
    "--control", type=click.Path(), help="The server's control socket (as given to ovis serve)."
)


def _call(control: str | None, request: dict[str, Any]) -> dict[str, Any]:
    path = Path(control) if control else default_control_path()
    try:
        return control_request(path, request)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def export() -> None:
    """Add, remove, list or snapshot the exports of a running `ovis serve`."""


@export.command("add")
@click.argument("name")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--readonly", is_flag=True)
@click.option("--cow", is_flag=True)
@click.option("--description", default="")
@click.option("--allow", multiple=True, help="Allowed client address or CIDR (repeatable).")
@click.option("--size", help="Override the export size (e.g. 10G).")
@click.option("--single-writer", is_flag=True, help="One client host writes at a time.")
@_control_option
def add(
    name: str,
    image: str,
    readonly: bool,
    cow: bool,
    description: str,
    allow: tuple[str, ...],
    size: str | None,
    single_writer: bool,
    control: str | None,
) -> None:
    """Serve IMAGE as export NAME without disturbing other clients."""
    entry = {
        "name": name,
        "path": str(Path(image).resolve()),  # the server may run in another directory
        "readonly": readonly,
        "cow": cow,
        "description": description,
        "allow": list(allow),
        "size": size,
        "single_writer": single_writer,
    }
    _call(control, {"op": "add", "export": entry})
    click.echo(f"added export {name}")


@export.command("remove")
@click.argument("name")
@_control_option
def remove(name: str, control: str | None) -> None:
    """Stop offering NAME; connected clients keep their session."""
    _call(control, {"op": "remove", "name": name})
    click.echo(f"removed export {name}")


@export.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_control_option
def list_(as_json: bool, control: str | None) -> None:
    """List the exports being served."""
    exports = _call(control, {"op": "list"})["exports"]
    if as_json:
        click.echo(json.dumps(exports, indent=2))
        return
    for entry in exports:
        mode = "readonly" if entry["readonly"] else "cow" if entry["cow"] else "read-write"
        mode += ",single-writer" if entry.get("single_writer") else ""
        click.echo(f"{entry['name']}\t{mode}\t{entry['path']}\t{entry['description']}")


@export.command("snapshot")
@click.argument("name", required=False)
@_control_option
def snapshot(name: str | None, control: str | None) -> None:
    """Take a crash-consistent copy of NAME (or of every export) while it is served."""
    for path in _call(control, {"op": "snapshot", "name": name})["paths"]:
        click.echo(path)


def _show_writer(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    hosts = ", ".join(f"{h} ({n})" for h, n in status["hosts"].items()) or "none"
    fenced = f"; {status['fenced']} handed over" if status.get("fenced") else ""
    click.echo(
        f"{status['export']}: writer {status['writer'] or 'none'}{fenced}; connections: {hosts}"
    )


@export.command("handover")
@click.argument("name")
@click.option("--to", "to", metavar="ADDRESS", help="Give the permission to this client host.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_control_option
def handover(name: str, to: str | None, as_json: bool, control: str | None) -> None:
    """Take NAME's write permission from its writer, flush, and hand it over.

    For the VM live-migration handover on a --single-writer export: writes
    from the current writer get EPERM from now on, those in flight finish,
    the export is flushed, then the host at ADDRESS may write (hand back to
    the old host if the migration fails).  Without --to the first host to
    write gets it, but not the old writer until it has disconnected.
    """
    status = _call(control, {"op": "handover", "name": name, "to": to})["status"]
    if not as_json:
        click.echo(f"{name}: write permission taken from {status['previous'] or 'nobody'}")
    _show_writer(status, as_json)


@export.command("writer")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_control_option
def writer(name: str, as_json: bool, control: str | None) -> None:
    """Show which client host may write the single-writer export NAME."""
    _show_writer(_call(control, {"op": "writer", "name": name})["status"], as_json)
