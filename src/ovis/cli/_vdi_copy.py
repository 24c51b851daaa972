"""`ovis vdi import` and `ovis vdi export`: whole volumes in and out, sparse."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from typing import Any

import click

from ovis._units import format_size
from ovis.nbd.client import NbdClient

from ._vdi_api import NodeApi, check_idle, json_option, node_option, print_json, progress
from ._vdi_transfer import (
    DEPTH,
    FileSource,
    NbdSource,
    Piece,
    chunks,
    close_all,
    connect_all,
    data_runs,
    failures,
    nbd_pieces,
    run_workers,
)

SECTOR = 512


def connections_option(f: Any) -> Any:
    return click.option(
        "--connections",
        default=4,
        show_default=True,
        type=click.IntRange(1, 16),
        help="NBD connections used at once.",
    )(f)


def quiet_option(f: Any) -> Any:
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar.")(f)


@click.command(name="import")
@click.argument("name")
@click.argument("source")
@connections_option
@quiet_option
@node_option
@json_option
def import_command(
    name: str, source: str, connections: int, quiet: bool, node_url: str, as_json: bool
) -> None:
    """Copy SOURCE (a file, block device or nbd:// URI) into volume NAME.

    NAME is created with SOURCE's size if it does not exist.  Holes in
    SOURCE are skipped, and only parts of NAME that hold data are zeroed.
    """
    if "@" in name:
        raise click.ClickException(f"cannot import into a snapshot ({name}); give a volume name")
    api = NodeApi(node_url)
    stats = asyncio.run(_import(api, name, source, connections, quiet or as_json))
    if as_json:
        print_json(stats)
    else:
        click.echo(
            f"imported {source} into {name}: {format_size(stats['written'])} written, "
            f"{format_size(stats['zeroed'])} zeroed, {format_size(stats['skipped'])} holes "
            f"skipped in {stats['seconds']:.1f} s"
        )


async def _import(
    api: NodeApi, name: str, source: str, connections: int, quiet: bool
) -> dict[str, Any]:
    reader: FileSource | NbdSource
    if "://" in source:
        reader = await NbdSource.open(source, connections)
    else:
        reader = FileSource(source)
    try:
        if reader.size == 0:
            raise click.ClickException(f"{source} is empty")
        volume = api.find(name)
        fresh = volume is None
        if volume is None:
            volume = api.create(name, -(-reader.size // SECTOR) * SECTOR)
        else:
            check_idle(api, volume)
        if volume["size"] < reader.size:
            raise click.ClickException(
                f"volume {name!r} is {format_size(volume['size'])} but {source} is "
                f"{format_size(reader.size)}; grow it first: ovis vdi resize {name} {reader.size}"
            )
        async with failures(f"import of {source} into {name}"):
            pieces = await reader.pieces()
            targets = await connect_all(api.nbd_uri(name), connections)
            try:
                return await _copy_in(reader, pieces, targets, fresh, quiet, f"import {name}")
            finally:
                await close_all(targets)
    finally:
        await reader.aclose()


async def _copy_in(
    reader: FileSource | NbdSource,
    pieces: list[Piece],
    targets: list[NbdClient],
    fresh: bool,
    quiet: bool,
    label: str,
) -> dict[str, Any]:
    stats = {"written": 0, "zeroed": 0, "skipped": 0}
    started = time.monotonic()
    with progress(reader.size, label, quiet) as bar:

        async def job(worker: int, piece: Piece) -> None:
            target = targets[worker % len(targets)]
            data = await reader.read(worker, piece.offset, piece.length) if piece.data else b""
            # Where the source reads as zeros, the target needs zeroing only if
            # it holds data in this chunk (never, for a volume just created).
            stale = not fresh and any(
                part.data for part in await nbd_pieces(target, piece.offset, piece.length)
            )
            at = 0
            for start, end in [*data_runs(data), (piece.length, piece.length)]:
                if start > at and stale:
                    await target.zero(piece.offset + at, start - at)
                    stats["zeroed"] += start - at
                elif start > at:
                    stats["skipped"] += start - at
                if end > start:
                    await target.write(piece.offset + start, data[start:end])
                    stats["written"] += end - start
                at = end
            bar.update(piece.length)

        await run_workers(chunks(pieces), len(targets) * DEPTH, job)
        for target in targets:  # one would do (multi-conn); all is cheap and sure
            await target.flush()
    return {**stats, "size": reader.size, "seconds": round(time.monotonic() - started, 3)}


@click.command(name="export")
@click.argument("spec", metavar="NAME[@TAG]")
@click.argument("dest", type=click.Path(dir_okay=False))
@connections_option
@quiet_option
@node_option
@json_option
def export_command(
    spec: str, dest: str, connections: int, quiet: bool, node_url: str, as_json: bool
) -> None:
    """Copy volume or snapshot NAME[@TAG] into file DEST (sparse: holes stay holes)."""
    api = NodeApi(node_url)
    api.info(spec)  # a clear error for an unknown name, before touching DEST
    stats = asyncio.run(_export(api, spec, dest, connections, quiet or as_json))
    if as_json:
        print_json(stats)
    else:
        click.echo(
            f"exported {spec} to {dest}: {format_size(stats['written'])} written, "
            f"{format_size(stats['skipped'])} left as holes in {stats['seconds']:.1f} s"
        )


def _open_dest(dest: str) -> int:
    try:
        if os.path.exists(dest) and not stat.S_ISREG(os.stat(dest).st_mode):
            raise click.ClickException(f"{dest} exists and is not a regular file")
        return os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise click.ClickException(f"cannot write {dest}: {exc.strerror}") from None


async def _export(
    api: NodeApi, spec: str, dest: str, connections: int, quiet: bool
) -> dict[str, Any]:
    sources = await connect_all(api.nbd_uri(spec), connections)
    stats = {"written": 0, "skipped": 0}
    started = time.monotonic()
    size = sources[0].size
    try:
        fd = _open_dest(dest)
        try:
            async with failures(f"export of {spec} to {dest}"):
                os.ftruncate(fd, size)  # all holes; only data gets written
                pieces = await nbd_pieces(sources[0])
                with progress(size, f"export {spec}", quiet) as bar:

                    async def job(worker: int, piece: Piece) -> None:
                        written = 0
                        if piece.data:
                            source = sources[worker % len(sources)]
                            data = await source.read(piece.offset, piece.length)
                            for start, end in data_runs(data):
                                chunk, at = data[start:end], piece.offset + start
                                await asyncio.to_thread(os.pwrite, fd, chunk, at)
                                written += end - start
                        stats["written"] += written
                        stats["skipped"] += piece.length - written
                        bar.update(piece.length)

                    await run_workers(chunks(pieces), len(sources) * DEPTH, job)
                await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
    finally:
        await close_all(sources)
    return {**stats, "size": size, "seconds": round(time.monotonic() - started, 3)}
