"""`ovis cluster format|info|nodes`: a cluster's config, epochs and live nodes.

Each command opens the Coordinator named by --cluster (env OVIS_CLUSTER:
etcd://HOST:PORT[,HOST:PORT...] or sqlite:PATH), reads or writes a key or
two and closes it; no node needs to be running.  Human output is aligned
text; --json prints the records themselves, for scripts.  Failures (bad
URL: usage error, exit 2; unreachable coordinator, cluster not formatted:
exit 1) are one line.  The library is imported inside the commands: aiohttp
is slow to import and other commands do not need it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._vdi_api import json_option, print_json, table, when

if TYPE_CHECKING:
    from ovis.cluster._model import NodeInfo
    from ovis.coord import Coordinator

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
TIMEOUT = 3.0  # seconds an etcd call keeps trying before the command gives up


def _checked_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ovis.coord._open import check_url

    try:
        check_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def cluster_option(f: F) -> F:
    return click.option(
        "--cluster",
        "url",
        required=True,
        envvar="OVIS_CLUSTER",
        metavar="URL",
        callback=_checked_url,
        help="The coordinator: etcd://HOST:PORT[,HOST:PORT...] or sqlite:PATH (env OVIS_CLUSTER).",
    )(f)


def _run(url: str, action: Callable[[Coordinator], Awaitable[T]]) -> T:
    """Run `action` on the coordinator at `url`; library errors become one-line exits."""
    from ovis.cluster._config import ClusterError
    from ovis.coord import CoordinatorError, open_coordinator

    async def main() -> T:
        async with open_coordinator(url, timeout=TIMEOUT) as coord:
            return await action(coord)

    try:
        return asyncio.run(main())
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    except CoordinatorError as exc:
        raise click.ClickException(f"coordinator {url}: {exc}") from None


@click.group()
def cluster() -> None:
    """Format a cluster and look at its epochs and nodes (the coordinator, not a node)."""


@cluster.command(name="format")
@cluster_option
@click.option("--copies", required=True, type=click.IntRange(1, 8), help="Copies of every object.")
@json_option
def format_command(url: str, copies: int, as_json: bool) -> None:
    """Create the cluster's config: COPIES copies of every object (done once)."""
    from ovis.cluster._config import format_cluster

    config = _run(url, lambda coord: format_cluster(coord, copies))
    if as_json:
        print_json({"cluster_id": config.cluster_id, "copies": config.copies,
                    "created_ns": config.created_ns})  # fmt: skip
    else:
        click.echo(f"formatted cluster {config.cluster_id} with {config.copies} copies")


NODE_HEADERS = ("ID", "ZONE", "WEIGHT", "PEER", "NBD")


def _node_row(node: NodeInfo) -> list[str]:
    return [node.id, node.zone, f"{node.weight:g}", node.peer, node.nbd or "-"]


@cluster.command()
@cluster_option
@json_option
def info(url: str, as_json: bool) -> None:
    """Show the cluster: its config, the current epoch's members and the epoch history."""
    from ovis.cluster._config import live_nodes, load_config, read_epoch

    async def gather(coord: Coordinator) -> Any:
        config = await load_config(coord)
        epoch, history, _ = await read_epoch(coord)
        return config, epoch, history, await live_nodes(coord)

    config, epoch, history, live = _run(url, gather)
    if as_json:
        print_json({
            "cluster_id": config.cluster_id,
            "copies": config.copies,
            "created_ns": config.created_ns,
            "epoch": epoch.to_json(),
            "history": [r.to_json() for r in history],
            "live": [n.to_json() for n in live],
        })  # fmt: skip
        return
    started = f"started {when(epoch.started_ns / 1e9)}" if epoch.number else "no node joined yet"
    rows = [
        ("cluster", config.cluster_id),
        ("copies", str(config.copies)),
        ("created", when(config.created_ns / 1e9)),
        ("epoch", f"{epoch.number} ({started})"),
        ("live nodes", ", ".join(n.id for n in live) or "-"),
    ]
    for key, value in rows:
        click.echo(f"{key:<10}  {value}")
    if epoch.members:
        click.echo(f"\nmembers of epoch {epoch.number}:")
        click.echo(table(NODE_HEADERS, [_node_row(m) for m in epoch.members], (2,)))
    if history:
        click.echo("\nepoch history:")
        history_rows = [
            [str(r.number), when(r.started_ns / 1e9), ", ".join(r.members), r.change()]
            for r in history
        ]
        click.echo(table(("EPOCH", "STARTED", "MEMBERS", "CHANGE"), history_rows, (0,)))


@cluster.command()
@cluster_option
@json_option
def nodes(url: str, as_json: bool) -> None:
    """List the live nodes (registered now, whether or not in the current epoch yet)."""
    from ovis.cluster._config import live_nodes, load_config

    async def gather(coord: Coordinator) -> list[NodeInfo]:
        await load_config(coord)
        return await live_nodes(coord)

    live = _run(url, gather)
    if as_json:
        print_json([n.to_json() for n in live])
    elif live:
        click.echo(table(NODE_HEADERS, [_node_row(n) for n in live], (2,)))
