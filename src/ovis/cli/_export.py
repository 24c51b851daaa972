"""`ovis export add|remove|list|snapshot`: change a running `ovis serve` (xnbd-wrapper-ctl)."""

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
@_control_option
def add(
    name: str,
    image: str,
    readonly: bool,
    cow: bool,
    description: str,
    allow: tuple[str, ...],
    size: str | None,
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
        click.echo(f"{entry['name']}\t{mode}\t{entry['path']}\t{entry['description']}")


@export.command("snapshot")
@click.argument("name", required=False)
@_control_option
def snapshot(name: str | None, control: str | None) -> None:
    """Take a crash-consistent copy of NAME (or of every export) while it is served."""
    for path in _call(control, {"op": "snapshot", "name": name})["paths"]:
        click.echo(path)
