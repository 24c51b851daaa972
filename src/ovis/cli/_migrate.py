"""`ovis migrate start|status|cancel|complete|switch|fill|reconnect|rate`: storage migration."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ovis._units import format_size, parse_size

from ._export import _call, _control_option


def _show(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    mirror, proxy = status.get("mirror"), status.get("proxy")
    if mirror is not None:
        click.echo(
            f"mirror {status['export']} to {mirror.get('destination')}: {mirror['state']}, "
            f"pass {mirror['iterations']}, "
            f"copied {format_size(mirror['copied_bytes'])}, "
            f"dirty {format_size(mirror['dirty_bytes'])}"
        )
        for p in mirror["passes"]:
            click.echo(
                f"  pass {p['iteration']}: {format_size(p['dirty_bytes'])} dirty at start, "
                f"{format_size(p['copied_bytes'])} copied in {p['seconds']:.2f}s"
            )
        if mirror.get("downtime_ms") is not None:
            click.echo(f"  final pause (writes held): {mirror['downtime_ms']:.1f} ms")
        if mirror.get("error"):
            click.echo(f"  error: {mirror['error']}")
            if mirror["state"] == "failed":
                click.echo("  cancel it, then start again (to a restarted destination)")
    if proxy is not None:
        state = (
            "switched"
            if proxy["switched"]
            else "complete"
            if proxy["complete"]
            else ("filling" if proxy["filling"] else "idle")
        )
        click.echo(
            f"proxy {status['export']}: {state}, {proxy['fraction'] * 100:.1f}% cached "
            f"({proxy['cached_blocks']}/{proxy['total_blocks']} blocks), "
            f"fetched {format_size(proxy['fetched_bytes'])}, "
            f"zeroed {format_size(proxy['zeroed_bytes'])}"
        )
        if proxy.get("source") is not None:
            click.echo(f"  source: {proxy['source']}")
        if proxy.get("fill_error"):
            click.echo(f"  fill error: {proxy['fill_error']}")
        if proxy.get("source_error") and not proxy["switched"]:
            click.echo(f"  source error: {proxy['source_error']} (see: ovis migrate reconnect)")
    if mirror is None and proxy is None:
        click.echo(f"{status['export']}: no migration")
    if status.get("retired"):
        click.echo(f"{status['export']}: migrated away; writes here are refused")


_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group()
def migrate() -> None:
    """Move an export's data to another server while it is in use."""


@migrate.command("start")
@click.argument("export")
@click.argument("destination", metavar="nbd://DEST")
@click.option("--max-rate", type=click.IntRange(1), help="Copy rate limit in bytes/s.")
@_control_option
@_json_option
def start(
    export: str, destination: str, max_rate: int | None, control: str | None, as_json: bool
) -> None:
    """Start mirroring EXPORT to the NBD export at DEST (pre-copy)."""
    request = {
        "op": "migrate-start",
        "name": export,
        "destination": destination,
        "max_rate": max_rate,
    }
    _show(_call(control, request)["status"], as_json)


def _simple(op: str, doc: str) -> click.Command:
    @click.argument("export")
    @_control_option
    @_json_option
    def command(export: str, control: str | None, as_json: bool) -> None:
        _show(_call(control, {"op": f"migrate-{op}", "name": export})["status"], as_json)

    command.__doc__ = doc
    return migrate.command(op)(command)


_simple("status", "Show the progress of EXPORT's mirror job or proxy fill.")
_simple("cancel", "Stop EXPORT's mirror job; the source stays untouched and writable.")
_simple("complete", "Wait until EXPORT's mirror is ready, then make the destination authoritative.")
_simple("switch", "Stop using the source of a fully cached proxy export.")
_simple("fill", "Start (or restart) proxy EXPORT's background fill (xnbd-bgctl --cache-all).")


def _rate(_ctx: click.Context, _param: click.Parameter, value: str) -> int | None:
    try:
        rate = parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return rate or None


@migrate.command("rate")
@click.argument("export")
@click.argument("rate", metavar="RATE", callback=_rate)
@_control_option
@_json_option
def rate(export: str, rate: int | None, control: str | None, as_json: bool) -> None:
    """Set the copy rate of EXPORT's mirror job or proxy fill (bytes/s; 0: no limit)."""
    request = {"op": "migrate-rate", "name": export, "max_rate": rate}
    _show(_call(control, request)["status"], as_json)


@migrate.command("reconnect")
@click.argument("export")
@click.argument("source", metavar="[nbd://SOURCE]", required=False)
@_control_option
@_json_option
def reconnect(export: str, source: str | None, control: str | None, as_json: bool) -> None:
    """Connect proxy EXPORT to SOURCE (default: its current source) and resume the fill.

    For a source that restarted or moved (xnbd-bgctl --reconnect): it must
    serve the same disk.
    """
    request = {"op": "migrate-reconnect", "name": export, "source": source}
    _show(_call(control, request)["status"], as_json)


def _done_fraction(status: dict[str, Any]) -> tuple[float, bool]:
    """How far EXPORT's migration is (0..1), and whether it has stopped moving."""
    mirror, proxy = status.get("mirror"), status.get("proxy")
    if mirror is not None:
        state = mirror["state"]
        if state in ("ready", "done"):
            return 1.0, True
        if state in ("cancelled", "failed"):
            return 0.0, True
        size = mirror["size"] or 1
        return max(0.0, 1 - mirror["dirty_bytes"] / size), False
    if proxy is not None:
        return proxy["fraction"], bool(proxy["complete"] or proxy["fill_error"])
    return 1.0, True


@migrate.command("watch")
@click.argument("export")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.05))
@_control_option
def watch(export: str, interval: float, control: str | None) -> None:
    """Show a progress bar until EXPORT's mirror is ready or its proxy fill is complete."""
    request = {"op": "migrate-status", "name": export}
    shown = 0
    with click.progressbar(length=1000, label=f"migrating {export}") as bar:
        while True:
            status = _call(control, request)["status"]
            fraction, stopped = _done_fraction(status)
            done = max(shown, int(fraction * 1000))  # a mirror's dirty set may grow back
            bar.update(done - shown)
            shown = done
            if stopped:
                break
            time.sleep(interval)
    _show(status, as_json=False)
