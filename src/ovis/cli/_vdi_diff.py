"""`ovis vdi diff` and `ovis vdi apply-diff`: incremental copies, like rbd export-diff.

The file format is in _vdi_diff_format.py.  apply-diff checks the digest
over the whole file before it writes anything, and refuses a target that is
not at the diff's base: the target must hold exactly what "from" held,
proven from the volumes' metadata (the node finds no changed object between
"from", or a snapshot of the target with the same tag, and the target).
--force skips that check.  When "to" is a snapshot, the target gets a
snapshot with the same tag afterwards, so diffs chain.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from typing import Any

import click

from ovis._units import format_size

from ._vdi_api import (
    ApiError,
    NodeApi,
    check_idle,
    json_option,
    node_option,
    print_json,
    progress,
    size_argument,
)
from ._vdi_diff_format import RECORD, DiffWriter, read_header, records, verify
from ._vdi_transfer import (
    DEPTH,
    Piece,
    chunks,
    close_all,
    connect_all,
    data_runs,
    failures,
    run_workers,
)


@click.command(name="diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write a diff file.")
@click.option("--granularity", help="Compare in blocks this small (default: whole objects).")
@click.option("--connections", default=4, show_default=True, type=click.IntRange(1, 16))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@node_option
@json_option
def diff_command(
    old: str,
    new: str,
    output: str | None,
    granularity: str | None,
    connections: int,
    quiet: bool,
    node_url: str,
    as_json: bool,
) -> None:
    """Changed extents from OLD to NEW (NAME@TAG to NAME@TAG2, or to the volume NAME)."""
    api = NodeApi(node_url)
    grain = size_argument(granularity, "granularity") if granularity else None
    answer = api.diff(old, new, grain)
    if output is None:
        _show(answer, as_json)
        return
    stats = asyncio.run(_write(api, answer, output, connections, quiet or as_json))
    if as_json:
        print_json(stats)
    else:
        click.echo(
            f"wrote {output}: {stats['records']} records, {format_size(stats['data_bytes'])} "
            f"of data, {format_size(stats['zero_bytes'])} zeroed"
        )


def _show(answer: dict[str, Any], as_json: bool) -> None:
    extents = answer["extents"]
    if as_json:
        print_json(extents)
        return
    for extent in extents:
        kind = "zero" if extent["zero"] else "data"
        click.echo(f"{extent['offset']:>14}  {extent['length']:>12}  {kind}")
    total = sum(extent["length"] for extent in extents)
    click.echo(f"{len(extents)} extent(s), {format_size(total)} changed", err=True)


def _side(volume: dict[str, Any]) -> dict[str, Any]:
    keys = ("spec", "name", "tag", "vid", "size")
    return {key: volume[key] for key in keys}


async def _write(
    api: NodeApi, answer: dict[str, Any], output: str, connections: int, quiet: bool
) -> dict[str, Any]:
    new = answer["new"]
    header = {
        "from": _side(answer["old"]),
        "to": _side(new),
        "size": new["size"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    pieces = list(chunks(Piece(e["offset"], e["length"], not e["zero"]) for e in answer["extents"]))
    clients = await connect_all(api.nbd_uri(new["spec"]), connections)
    partial = f"{output}.partial"
    stats = {"data_bytes": 0, "zero_bytes": 0}
    window: collections.deque[tuple[Piece, asyncio.Task[bytes] | None]] = collections.deque()
    try:
        async with failures(f"diff of {new['spec']}"):
            with (
                open(partial, "wb") as out,
                progress(sum(p.length for p in pieces), f"diff {new['spec']}", quiet) as bar,
            ):
                writer = DiffWriter(out, header)
                for number, piece in enumerate(pieces):  # reads run ahead, records stay in order
                    read = None
                    if piece.data:
                        client = clients[number % len(clients)]
                        read = asyncio.ensure_future(client.read(piece.offset, piece.length))
                    window.append((piece, read))
                    if len(window) >= len(clients) * DEPTH:
                        await _emit(writer, stats, *window.popleft(), bar)
                while window:
                    await _emit(writer, stats, *window.popleft(), bar)
                writer.finish()
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, output)
            stats["records"] = writer.records
    finally:
        for _, read in window:
            if read is not None:
                read.cancel()
        await close_all(clients)
        if os.path.exists(partial):
            os.unlink(partial)
    return {**stats, "file": output, "from": header["from"], "to": header["to"]}


async def _emit(
    writer: DiffWriter,
    stats: dict[str, int],
    piece: Piece,
    read: asyncio.Task[bytes] | None,
    bar: Any,
) -> None:
    data = await read if read is not None else b""
    at = written = 0
    for start, end in data_runs(data):
        if start > at:
            writer.zero(piece.offset + at, start - at)
        writer.data(piece.offset + start, data[start:end])
        written += end - start
        at = end
    if at < piece.length:
        writer.zero(piece.offset + at, piece.length - at)
    stats["data_bytes"] += written
    stats["zero_bytes"] += piece.length - written
    bar.update(piece.length)


# -- apply-diff ---------------------------------------------------------------------


def check_base(api: NodeApi, name: str, base: dict[str, Any]) -> None:
    """Refuse unless volume `name` provably holds what the diff's base held."""
    candidates = []
    known = api.find(base["spec"])
    if known is not None and known["vid"] == base["vid"]:
        candidates.append(base["spec"])
    if base["tag"] and api.find(f"{name}@{base['tag']}") is not None:
        candidates.append(f"{name}@{base['tag']}")
    for spec in candidates:
        if not api.diff(spec, name)["extents"]:
            return
    raise click.ClickException(
        f"volume {name!r} does not hold the diff's base {base['spec']} (it has changed since, "
        "or does not derive from it); --force applies the diff anyway"
    )


@click.command(name="apply-diff")
@click.argument("name")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Apply even if NAME is not at the diff's base.")
@click.option("--no-snapshot", is_flag=True, help="Do not snapshot NAME with the diff's tag.")
@click.option("--connections", default=4, show_default=True, type=click.IntRange(1, 16))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@node_option
@json_option
def apply_diff_command(
    name: str,
    path: str,
    force: bool,
    no_snapshot: bool,
    connections: int,
    quiet: bool,
    node_url: str,
    as_json: bool,
) -> None:
    """Apply diff FILE (from `ovis vdi diff -o`) to volume NAME."""
    api = NodeApi(node_url)
    header = verify(path)
    volume = api.info(name)
    if volume["snapshot"]:
        raise click.ClickException(f"{name} is a snapshot; apply the diff to a volume")
    check_idle(api, volume)
    if not force:
        check_base(api, name, header["from"])
    if volume["size"] != header["size"]:
        api.resize(name, header["size"], force=True)  # beyond "to"'s end is not part of it
    written = asyncio.run(_apply(api, name, path, connections, quiet or as_json))
    tag = header["to"]["tag"]
    snapshot = None
    if tag and not no_snapshot:
        try:
            snapshot = api.snapshot(name, tag)["spec"]
        except ApiError as exc:
            click.echo(f"note: no snapshot {name}@{tag}: {exc.message}", err=True)
    result = {"volume": name, "applied": header["to"]["spec"], "snapshot": snapshot, **written}
    if as_json:
        print_json(result)
    else:
        made = f"; snapshot {snapshot}" if snapshot else ""
        click.echo(f"applied {path} to {name}: now at {header['to']['spec']}{made}")


async def _apply(
    api: NodeApi, name: str, path: str, connections: int, quiet: bool
) -> dict[str, int]:
    clients = await connect_all(api.nbd_uri(name), connections)
    stats = {"data_bytes": 0, "zero_bytes": 0}
    try:
        async with failures(f"applying {path} to {name}"):
            with (
                open(path, "rb") as f,
                progress(os.path.getsize(path), f"apply {name}", quiet) as bar,
            ):
                read_header(f, path)

                async def job(worker: int, record: tuple[Piece, bytes | None]) -> None:
                    piece, data = record
                    client = clients[worker % len(clients)]
                    if data is None:
                        await client.zero(piece.offset, piece.length)
                        stats["zero_bytes"] += piece.length
                    else:
                        await client.write(piece.offset, data)
                        stats["data_bytes"] += piece.length
                    bar.update(RECORD.size + len(data or b""))

                # Records never overlap, so they may land in any order.
                await run_workers(records(f, path), len(clients) * DEPTH, job)
            for client in clients:
                await client.flush()
    finally:
        await close_all(clients)
    return stats
