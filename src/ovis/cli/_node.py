"""`ovis node start`: serve a data directory's volumes over NBD, with a management API."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from ovis._units import format_size

from . import _daemon
from ._cluster import nodes as cluster_nodes
from ._vdi_api import NodeApi, json_option, node_option, print_json, when


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
@click.option(
    "--cluster",
    metavar="URL",
    help="Join this cluster (etcd://HOST:PORT[,HOST:PORT...]); default: a single node.",
)
@click.option("--node-id", help="This node's id in the cluster (default: generated, kept in DATA).")
@click.option("--zone", help="Failure zone; at most one copy per zone (default: the node id).")
@click.option("--weight", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Relative capacity: a node of weight 2 holds twice the data.")  # fmt: skip
@click.option("--peer-port", default=10811, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the replica service other nodes use (on --bind).")  # fmt: skip
@click.option("--session-ttl", default=5, show_default=True, type=click.IntRange(1, 600),
              help="Seconds without contact after which the cluster drops this node.")  # fmt: skip
@click.option("--recovery-max-rate", default="0", show_default=True, metavar="SIZE",
              help="Recovery bandwidth per second, e.g. 100M (0: unlimited).")  # fmt: skip
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
    cluster: str | None,
    node_id: str | None,
    zone: str | None,
    weight: float,
    peer_port: int,
    session_ttl: int,
    recovery_max_rate: str,
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
        data_dir=Path(data_dir),
        bind=bind,
        port=port,
        api_port=api_port,
        unix=unix,
        cluster=cluster,
        node_id=node_id,
        zone=zone,
        weight=weight,
        peer_port=peer_port,
        session_ttl=session_ttl,
        recovery_rate=_rate(recovery_max_rate),
    )
    _daemon.setup_logging(verbose, log_file, syslog)
    shown = Path(data_dir).resolve()

    def announce(where: NodeAddresses) -> str:
        return (
            f"ovis node: serving volumes from {shown}{shown_cluster} on {where.nbd}, "
            f"api {where.api}"
        )

    shown_cluster = f" in cluster {cluster}" if cluster else ""
    _daemon.run_service(
        functools.partial(run, options),
        announce,
        daemon=daemonize,
        pid_path=pidfile,
        failures=(NodeError,),
        logger="ovis.node",
    )


def _rate(text: str) -> int:
    from ovis._units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (e.g. 100M)", param_hint="--recovery-max-rate") from None


@node.command()
@node_option
@json_option
def info(node_url: str, as_json: bool) -> None:
    """Show a running node: addresses, and its cluster epoch if it is a member."""
    api = NodeApi(node_url)
    about = api.about()
    cluster = _optional(api, "/v1/cluster")
    if as_json:
        print_json({**about, "cluster": cluster})
        return
    rows = [(k, str(v)) for k, v in about.items() if not isinstance(v, dict | list)]
    if cluster is not None:
        epoch = cluster["epoch"]
        members = ", ".join(m["id"] for m in epoch["members"])
        rows += [
            ("epoch", f"{epoch['epoch']} ({members})"),
            ("accepting writes", "yes" if cluster["accepting_writes"] else "no"),
        ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@node.command()
@node_option
def kill(node_url: str) -> None:
    """Stop a running node cleanly (as SIGTERM: clients drained, volumes flushed)."""
    NodeApi(node_url).call("POST", "/v1/node/stop", {})
    click.echo(f"ovis node at {node_url} is stopping")


@node.group(invoke_without_command=True)
@node_option
@json_option
@click.pass_context
def recovery(ctx: click.Context, node_url: str, as_json: bool) -> None:
    """Show this node's recovery progress (and set its throttle: set-throttle)."""
    ctx.obj = node_url
    if ctx.invoked_subcommand is not None:
        return
    status = NodeApi(node_url).call("GET", "/v1/recovery")
    if as_json:
        print_json(status)
        return
    for key, value in status.items():
        click.echo(f"{key}: {_recovery_value(key, value)}")


def _recovery_value(key: str, value: Any) -> str:
    """A recovery status field as people read it (the JSON keeps raw numbers)."""
    if key == "started" and isinstance(value, int | float):
        return when(value)
    if key == "bytes" and isinstance(value, int):
        return format_size(value)
    if key == "max_rate" and isinstance(value, int):
        return f"{format_size(value)}/s" if value else "unlimited"
    return str(value)


@recovery.command(name="set-throttle")
@click.argument("rate", metavar="RATE")
@click.pass_obj
def set_throttle(node_url: str, rate: str) -> None:
    """Limit recovery to RATE bytes per second (e.g. 100M; 0: unlimited)."""
    result = NodeApi(node_url).call("POST", "/v1/recovery/throttle", {"rate": _rate(rate)})
    click.echo(f"recovery throttle: {_recovery_value('max_rate', result['max_rate'])}")


def _optional(api: NodeApi, path: str) -> Any:
    """GET `path`, or None if the node has no such route (not a cluster member)."""
    try:
        return api.call("GET", path)
    except click.ClickException as exc:
        if getattr(exc, "status", None) == 404:
            return None
        raise


node.add_command(cluster_nodes, name="list")  # `ovis node list` = `ovis cluster nodes`
