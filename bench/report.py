"""Turn per-rep measurements into medians, ratios and a plain-text table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from workloads import FIO_JOBS


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    higher_is_better: bool


ROWS = (
    Row("seq_read", "seq read 1M QD16", "MiB/s", True),
    Row("rand_read", "rand read 4k QD32", "IOPS", True),
    Row("seq_write", "seq write 1M QD16", "MiB/s", True),
    Row("rand_write", "rand write 4k QD32", "IOPS", True),
    Row("nbdcopy", "nbdcopy 4 conns -> null:", "MiB/s", True),
    Row("cpu_s", "server CPU, all workloads", "s", False),
    Row("nbdcopy_cpu_s", "server CPU, nbdcopy only", "s", False),
    Row("peak_rss_mib", "server peak RSS", "MiB", False),
)
assert {job.key for job in FIO_JOBS} <= {row.key for row in ROWS}

Measurements = dict[str, float | None]


def medians(reps: list[Measurements]) -> Measurements:
    """Median of each row over the reps that measured it; None if none did."""
    result: Measurements = {}
    for row in ROWS:
        values = [v for v in (rep.get(row.key) for rep in reps) if v is not None]
        result[row.key] = statistics.median(values) if values else None
    return result


def spread(reps: list[Measurements], key: str) -> float | None:
    """Half the range over the median, as a fraction: how noisy a cell is."""
    values = [v for v in (rep.get(key) for rep in reps) if v is not None]
    if len(values) < 2 or statistics.median(values) == 0:
        return None
    return (max(values) - min(values)) / 2 / statistics.median(values)


def ratios(median_by_server: dict[str, Measurements]) -> dict[str, float | None]:
    """ovis / best peer for each row; best is the max or the min as the row says."""
    result: dict[str, float | None] = {}
    ovis = median_by_server.get("ovis", {})
    for row in ROWS:
        peers = [
            value
            for server, values in median_by_server.items()
            if server != "ovis" and (value := values.get(row.key)) is not None
        ]
        mine = ovis.get(row.key)
        if mine is None or not peers:
            result[row.key] = None
            continue
        best = max(peers) if row.higher_is_better else min(peers)
        result[row.key] = mine / best if best else None
    return result


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def _cell(value: float | None, noise: float | None) -> str:
    text = number(value)
    return f"{text} ±{noise:.0%}" if noise is not None and value is not None else text


def table(reps_by_server: dict[str, list[Measurements]]) -> str:
    """Medians per server (± half the range across reps) and ovis / best peer."""
    servers = list(reps_by_server)
    median_by_server = {server: medians(reps) for server, reps in reps_by_server.items()}
    ratio = ratios(median_by_server)
    header = ["metric", "unit", *servers, "ovis/best peer"]
    lines = [header]
    for row in ROWS:
        cells = [
            _cell(median_by_server[server][row.key], spread(reps_by_server[server], row.key))
            for server in servers
        ]
        better = "higher" if row.higher_is_better else "lower"
        value = ratio[row.key]
        shown = f"{value:.2f} ({better} better)" if value is not None else "-"
        lines.append([row.label, row.unit, *cells, shown])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        padded = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(padded).rstrip())
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def context_lines(context: dict[str, list[dict[str, float]]], cores: int) -> str:
    """Two lines: how busy other work kept the machine, and how many threads each server ran."""
    measured = {server: reps for server, reps in context.items() if reps}
    load = ", ".join(
        f"{server} {statistics.median(rep['other_cores'] for rep in reps):.2f}"
        for server, reps in measured.items()
    )
    threads = ", ".join(
        f"{server} {max(int(rep['peak_threads']) for rep in reps)}"
        for server, reps in measured.items()
    )
    return (
        f"other work on the machine meanwhile, median cores busy of {cores}: {load}\n"
        f"server threads + processes at peak: {threads}"
    )
