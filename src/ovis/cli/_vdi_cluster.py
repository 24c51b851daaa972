"""`ovis vdi attach` and `ovis vdi check`: the cluster's volume commands."""

from __future__ import annotations

import click

from ._vdi_api import NodeApi, json_option, node_option, print_json, quote_spec


@click.command()
@click.argument("name")
@click.option(
    "--migrate-from",
    "source",
    required=True,
    metavar="NODE",
    help="The node that holds the volume now (its node id).",
)
@click.option(
    "--seconds",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="How long the second writer may coexist with the first.",
)
@node_option
@json_option
def attach(name: str, source: str, seconds: float, node_url: str, as_json: bool) -> None:
    """Let this node attach NAME read-write while NODE still holds it (live migration).

    Opens a time-bounded window: the destination's hypervisor may connect
    through --node while the source's is still attached.  When the source
    detaches, the destination becomes the only writer and the source is
    fenced; if the window ends first, the destination's attachment is revoked.
    """
    body = {"migrate_from": source, "seconds": seconds}
    result = NodeApi(node_url).call("POST", f"/v1/volumes/{quote_spec(name)}/attach", body)
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"migration window open: {name} may be attached on {result['to']} "
            f"while {source} holds it, for {seconds:g} s"
        )


@click.command()
@click.argument("spec", metavar="NAME[@TAG]")
@click.option("--repair", is_flag=True, help="Copy the newest version over stale replicas.")
@node_option
@json_option
def check(spec: str, repair: bool, node_url: str, as_json: bool) -> None:
    """Compare every replica of SPEC's objects; with --repair, fix them from the newest."""
    body = {"repair": repair}
    report = NodeApi(node_url).call("POST", f"/v1/volumes/{quote_spec(spec)}/check", body)
    if as_json:
        print_json(report)
    else:
        click.echo(
            f"{spec}: {report['objects']} objects, {report['replicas']} replicas checked; "
            f"{len(report['stale'])} stale, {len(report['diverged'])} diverged, "
            f"{len(report['unreachable'])} unreachable, {len(report['repaired'])} repaired"
        )
        for kind in ("stale", "diverged", "unreachable", "repaired"):
            for line in report[kind]:
                click.echo(f"  {kind}: {line}")
    if not report["clean"]:
        raise SystemExit(1)
