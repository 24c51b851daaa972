"""`ovis node start`: serve a data directory's volumes over NBD, with a management API."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from . import _daemon


@click.group()
def node() -> None:
    """Run an ovis node (volumes over NBD; manage them with `ovis vdi`)."""


@node.command()
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Data directory (created if missing): catalog.sqlite and objects/.",
)
@click.option("--bind", default="127.0.0.1", show_default=True, help="NBD listen address.")
@click.option("--port", default=10809, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-port",
    default=10810,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Management API port (always on 127.0.0.1).",
)
@click.option("--unix", type=click.Path(), help="Serve NBD on a unix socket instead of TCP.")
@click.option("--log-file", type=click.Path(dir_okay=False))
@click.option("--syslog", is_flag=True, help="Log to syslog.")
@click.option("--pidfile", type=click.Path(dir_okay=False))
@click.option("--daemonize", is_flag=True, help="Run in the background once listening.")
@click.option("-v", "--verbose", count=True)
def start(
    data_dir: str,
    bind: str,
    port: int,
    api_port: int,
    unix: str | None,
    log_file: str | None,
    syslog: bool,
    pidfile: str | None,
    daemonize: bool,
    verbose: int,
) -> None:
    """Serve every volume in DATA over NBD: NAME read-write, NAME@TAG read-only."""
    # Imported here: aiohttp takes longer to import than the rest of the CLI.
    from ovis.node import NodeAddresses, NodeError, NodeOptions, run

    options = NodeOptions(
        data_dir=Path(data_dir), bind=bind, port=port, api_port=api_port, unix=unix
    )
    _daemon.setup_logging(verbose, log_file, syslog)
    shown = Path(data_dir).resolve()

    def announce(where: NodeAddresses) -> str:
        return f"ovis node: serving volumes from {shown} on {where.nbd}, api {where.api}"

    _daemon.run_service(
        functools.partial(run, options),
        announce,
        daemon=daemonize,
        pid_path=pidfile,
        failures=(NodeError,),
        logger="ovis.node",
    )
