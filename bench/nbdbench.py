"""Benchmark `ovis serve` side by side with qemu-nbd, nbdkit and nbd-server.

One run: make a prefilled raw image; then for each rep, for each server (the
order rotates each rep), re-read the image into the page cache, start the
server, run fio (seq/rand read/write) and nbdcopy against it while watching
its CPU and RSS, stop it. Print medians and ovis / best peer; save JSON.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import procstat
import report
import servers
import workloads
from report import Measurements
from servers import Endpoint
from workloads import MiB

RESULTS = Path(__file__).resolve().parent / "results"
VERSION_COMMANDS = {
    "ovis": [str(servers.OVIS), "--version"],
    "qemu-nbd": ["qemu-nbd", "--version"],
    "nbdkit": ["nbdkit", "--version"],
    "nbd-server": ["nbd-server", "-V"],
    "fio": ["fio", "--version"],
    "nbdcopy": ["nbdcopy", "--version"],
}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 64M image, 1 s per workload, no ramp, 1 rep",
    )
    parser.add_argument("--size", type=parse_size, help="image size (default 1G; quick 64M)")
    parser.add_argument("--reps", type=int, help="repetitions per server (default 3; quick 1)")
    parser.add_argument("--runtime", type=float, help="seconds per fio job (default 10; quick 1)")
    parser.add_argument("--ramp", type=float, help="fio ramp seconds (default 2; quick 0)")
    parser.add_argument(
        "--servers", default=",".join(servers.SERVERS), help="comma-separated subset of %(default)s"
    )
    parser.add_argument("--ovis-args", default="", help="more arguments for ovis serve")
    parser.add_argument("--unix", action="store_true", help="use unix sockets instead of TCP")
    parser.add_argument("--name", default="bench", help="export name (default %(default)s)")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/*.json)")
    parser.add_argument("--workdir", type=Path, help="where the image goes (default $TMPDIR)")
    args = parser.parse_args(argv)
    quick = args.quick
    for field, full, small in (
        ("size", 1 << 30, 64 * MiB),
        ("reps", 3, 1),
        ("runtime", 10.0, 1.0),
        ("ramp", 2.0, 0.0),
    ):
        if getattr(args, field) is None:
            setattr(args, field, small if quick else full)
    if args.reps < 1 or args.runtime <= 0 or args.ramp < 0 or args.size < 1 << 20:
        parser.error("need --reps >= 1, --runtime > 0, --ramp >= 0 and --size >= 1M")
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = set(args.servers) - set(servers.SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(
    server: str, image: Path, args: argparse.Namespace, runs: Path, notes: list[str]
) -> tuple[Measurements, dict[str, float]]:
    """One rep against one server: start it, run every workload, stop it.

    Also returns how busy the rest of the machine was meanwhile: `other_cores` is the
    CPU used by neither the server, the clients nor this script, per second of wall time.
    """
    result: Measurements = {row.key: None for row in report.ROWS}
    rundir = Path(tempfile.mkdtemp(prefix=f"{server}-", dir=runs))
    if args.unix:
        endpoint = Endpoint(args.name, socket=rundir / "nbd.sock")
    else:
        endpoint = Endpoint(args.name, port=servers.free_port())
    uri = endpoint.uri()
    workloads.warm_cache(image)
    extra = shlex.split(args.ovis_args) if server == "ovis" else []
    running = servers.start(server, image, endpoint, rundir, extra)
    monitor = procstat.TreeMonitor(running.pid)

    def fio(job: workloads.FioJob) -> float:
        return workloads.run_fio(job, uri, args.runtime, args.ramp, rundir / f"{job.key}.json")

    steps: list[tuple[str, Callable[[], float]]] = [
        (job.key, partial(fio, job)) for job in workloads.FIO_JOBS
    ]
    # nbdcopy reads: run it after the fio reads, before the writes.
    steps.insert(2, ("nbdcopy", partial(workloads.run_nbdcopy, uri, args.size)))
    busy, own, started = procstat.busy_cpu_seconds(), procstat.own_cpu_seconds(), time.time()
    try:
        for key, step in steps:
            cpu_before = monitor.cpu_seconds()
            try:
                result[key] = step()
            except workloads.WorkloadError as exc:
                log(f"  {server}: {key} failed: {exc}")
                notes.append(f"{server}: {key} failed: {exc}")
            if key == "nbdcopy":
                result["nbdcopy_cpu_s"] = monitor.cpu_seconds() - cpu_before
            log(f"  {server} {key}: {report.number(result[key])}")
        result["cpu_s"] = server_cpu = monitor.cpu_seconds()
        wall = time.time() - started
        busy = procstat.busy_cpu_seconds() - busy
        own = procstat.own_cpu_seconds() - own
    finally:
        monitor.stop()
        servers.stop(running)
    result["peak_rss_mib"] = monitor.peak_rss / MiB
    other = max(0.0, busy - own - server_cpu)
    seen = {"started": started, "wall_s": wall, "other_cores": other / wall}
    return result, {**seen, "peak_threads": monitor.peak_threads}


def version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError:
        return "not installed"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return next((line for line in lines if "version" in line.lower()), lines[0] if lines else "?")


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(servers.REPO), *argv], capture_output=True, text=True
        ).stdout.strip()

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ovis_commit": git("describe", "--always", "--dirty"),
        # ovis runs from the working tree: note what differs from the commit.
        "ovis_modified": git("status", "--porcelain", "--", "src").splitlines(),
        "loadavg_at_start": os.getloadavg(),
        "versions": {tool: version(argv) for tool, argv in VERSION_COMMANDS.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    servers.become_subreaper()
    skipped = {s: f"{b} not found" for s in args.servers if (b := servers.missing_binary(s))}
    for server, reason in skipped.items():
        log(f"skipping {server}: {reason}")
    chosen = [server for server in args.servers if server not in skipped]
    if not chosen:
        log("no server to benchmark")
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    info = machine()
    transport = "unix" if args.unix else "tcp"
    reps_by_server: dict[str, list[Measurements]] = {server: [] for server in chosen}
    context: dict[str, list[dict[str, float]]] = {server: [] for server in chosen}
    # Sockets, configs and logs go in $TMPDIR even with --workdir: unix socket paths are short.
    with (
        tempfile.TemporaryDirectory(prefix="nbdbench-", dir=args.workdir) as tmp,
        tempfile.TemporaryDirectory(prefix="nbdbench-") as runs,
    ):
        image = Path(tmp) / "image.raw"
        log(f"writing a {args.size / MiB:.0f} MiB image: {image}")
        workloads.make_image(image, args.size)
        for rep in range(args.reps):
            order = chosen[rep % len(chosen) :] + chosen[: rep % len(chosen)]
            for server in order:
                log(f"rep {rep + 1}/{args.reps}: {server} over {transport}")
                try:
                    measured, seen = measure(server, image, args, Path(runs), notes)
                    reps_by_server[server].append(measured)
                    context[server].append(seen)
                except RuntimeError as exc:  # it would not start: note it, keep going
                    log(f"  {server}: {exc}")
                    notes.append(f"{server} rep {rep + 1}: {exc}")
    text = report.table(reps_by_server) + "\n" + report.context_lines(context, os.cpu_count() or 1)
    medians = {server: report.medians(reps) for server, reps in reps_by_server.items()}
    results = {
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "transport": transport,
        "options": {
            "size": args.size,
            "reps": args.reps,
            "runtime": args.runtime,
            "ramp": args.ramp,
            "quick": args.quick,
            "name": args.name,
            "ovis_args": args.ovis_args,
        },
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "rows": [asdict(row) for row in report.ROWS],
        "servers": {
            s: {"reps": reps_by_server[s], "median": medians[s], "context": context[s]}
            for s in chosen
        },
        "skipped": skipped,
        "ratio_ovis_to_best_peer": report.ratios(medians),
        "notes": notes,
        "table": text,
    }
    path = args.json or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{transport}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"ovis bench over {transport}: {args.size / MiB:.0f} MiB image, reps {args.reps}, "
        f"{args.runtime:g} s per fio job after {args.ramp:g} s ramp; medians"
        + (f"; ovis serve {args.ovis_args}" if args.ovis_args else "")
    )
    print(text)
    for server, reason in skipped.items():
        print(f"note: {server} skipped: {reason}")
    for note in notes:
        print(f"note: {note}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
