"""The price of replication: ovis cluster volumes against `ovis serve` on one machine.

One run, everything on 127.0.0.1 (clients, etcd and every node share the machine's cores):

1. Write throughput, `fio --ioengine=nbd --rw=write --bs=1M --iodepth=16`, time based
   (default 10 s after a 2 s ramp), one connection, no flushes:
   - a 3-copy volume on a 3-node cluster (formatted --copies 3), written through n0;
   - a 1-copy volume on a 3-node cluster formatted --copies 1, written through n0;
   - `ovis serve` exporting a raw file.
   Ratios: 3 copies / 1 copy, 3 copies / serve, 1 copy / serve.
2. Recovery throughput: a 2-copy volume on 3 nodes filled with --fill bytes (default
   512 MiB, fio sequential write, then a flush); once the cluster is idle, n2 is killed
   (SIGKILL) and the clock runs until every survivor's GET /v1/recovery says done for the
   new epoch.  Reported: bytes copied (sum of the survivors' `bytes`), the longest
   survivor's `seconds` (gather + copy), the wall time from the kill (which includes the
   session TTL, 2 s, and the epoch change), and MB/s for both.

Prints a table and writes JSON to bench/results/YYYYmmdd-HHMMSS-cluster.json.

    .venv/bin/python bench/cluster_bench.py [--runtime 10] [--ramp 2] [--size 1G]
        [--fill 512M] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import servers
import workloads
from workloads import MiB

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.harness import Cluster  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SEQ_WRITE = workloads.FioJob("seq_write", "write", "1M", 16, "MiB/s")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", type=float, default=10, help="seconds per fio job")
    parser.add_argument("--ramp", type=float, default=2, help="fio ramp seconds")
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="volume/image size")
    parser.add_argument("--fill", type=parse_size, default=512 * MiB, help="recovery fill")
    parser.add_argument("--workdir", type=Path, help="where data dirs go (default $TMPDIR)")
    parser.add_argument("--json", type=Path, help="result file (default bench/results/...)")
    return parser.parse_args(argv)


def fio_write(uri: str, args: argparse.Namespace, workdir: Path) -> float:
    out = workdir / f"fio-{time.monotonic_ns()}.json"
    return workloads.run_fio(SEQ_WRITE, uri, args.runtime, args.ramp, out)


def cluster_write(copies: int, args: argparse.Namespace, workdir: Path) -> float:
    with Cluster(workdir / f"copies{copies}", nodes=3, copies=copies) as cluster:
        cluster.vdi("create", "bench", str(args.size))
        log(f"{copies}-copy volume on 3 nodes: fio seq write 1M QD16")
        return fio_write(cluster.nbd_uri(0, "bench"), args, workdir)


def serve_write(args: argparse.Namespace, workdir: Path) -> float:
    image = workdir / "serve.img"
    with open(image, "wb") as f:
        f.truncate(args.size)
    endpoint = servers.Endpoint("bench", servers.free_port())
    running = servers.start("ovis", image, endpoint, workdir, [])
    try:
        log("ovis serve on a raw file: fio seq write 1M QD16")
        return fio_write(endpoint.uri(), args, workdir)
    finally:
        servers.stop(running)


def recovery(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with Cluster(workdir / "recovery", nodes=3, copies=2) as cluster:
        cluster.vdi("create", "fill", str(args.fill))
        log(f"recovery: filling a 2-copy volume with {args.fill // MiB} MiB")
        fill = subprocess.run(
            ["fio", "--name=fill", "--ioengine=nbd", f"--uri={cluster.nbd_uri(0, 'fill')}",
             "--rw=write", "--bs=1M", "--iodepth=16", f"--size={args.fill}",
             "--end_fsync=1", "--output-format=terse"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if fill.returncode != 0:
            raise RuntimeError(f"fio fill exited {fill.returncode}: {fill.stderr[-2000:]}")
        cluster.wait_recovered(timeout=120)
        on_disk = sum(sum(cluster.object_files(n).values()) for n in range(3))
        log("recovery: killing n2")
        killed = time.monotonic()
        cluster.kill(2)
        cluster.wait_epoch({0, 1}, timeout=60)
        statuses = cluster.wait_recovered(timeout=600)
        wall = time.monotonic() - killed
        copied = sum(int(s.get("bytes", 0)) for s in statuses.values())
        seconds = max(float(s.get("seconds", 0)) for s in statuses.values())
        return {
            "fill_bytes": args.fill,
            "bytes_on_disk_before": on_disk,
            "bytes_copied": copied,
            "recovery_seconds": seconds,
            "wall_seconds_from_kill": round(wall, 3),
            "mb_per_s": round(copied / 1e6 / seconds, 1) if seconds else None,
            "mb_per_s_wall": round(copied / 1e6 / wall, 1),
            "statuses": statuses,
        }


def measured(what: str, notes: list[str], fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # one failed part leaves a note, the others still run
        notes.append(f"{what}: {exc}")
        log(f"{what} failed: {exc}")
        return None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def table(write: dict[str, float | None], rec: dict[str, Any] | None) -> str:
    def cell(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    rows = [
        ("seq write 1M QD16, 3 copies (3 nodes)", cell(write["copies3"]), "MiB/s"),
        ("seq write 1M QD16, 1 copy (3 nodes)", cell(write["copies1"]), "MiB/s"),
        ("seq write 1M QD16, ovis serve (raw file)", cell(write["serve"]), "MiB/s"),
        ("3 copies / 1 copy", cell(ratio(write["copies3"], write["copies1"]), 2), "x"),
        ("3 copies / serve", cell(ratio(write["copies3"], write["serve"]), 2), "x"),
        ("1 copy / serve", cell(ratio(write["copies1"], write["serve"]), 2), "x"),
    ]
    if rec is not None:
        rows += [
            ("recovery: bytes copied", f"{rec['bytes_copied'] / MiB:,.1f}", "MiB"),
            ("recovery: time (longest survivor)", cell(rec["recovery_seconds"]), "s"),
            ("recovery: wall time from the kill", cell(rec["wall_seconds_from_kill"]), "s"),
            ("recovery throughput", cell(rec["mb_per_s"]), "MB/s"),
            ("recovery throughput, wall", cell(rec["mb_per_s_wall"]), "MB/s"),
        ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value:>10} {unit}" for name, value, unit in rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("fio", "etcd"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/setup)", file=sys.stderr)
            return 1
    notes: list[str] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ovis-cluster-bench-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        write: dict[str, float | None] = {
            "copies3": measured("3 copies", notes, lambda: cluster_write(3, args, workdir)),
            "copies1": measured("1 copy", notes, lambda: cluster_write(1, args, workdir)),
            "serve": measured("serve", notes, lambda: serve_write(args, workdir)),
        }
        rec = measured("recovery", notes, lambda: recovery(args, workdir))
    printed = table(write, rec)
    print(printed)
    for note in notes:
        print(f"note: {note}")
    result = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "nproc": os.cpu_count(),
            "kernel": platform.release(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "seq_write_mib_s": write,
        "ratios": {
            "copies3_to_copies1": ratio(write["copies3"], write["copies1"]),
            "copies3_to_serve": ratio(write["copies3"], write["serve"]),
            "copies1_to_serve": ratio(write["copies1"], write["serve"]),
        },
        "recovery": rec,
        "notes": notes,
        "table": printed,
    }
    path = args.json or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-cluster.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"results in {path}")
    return 0 if not notes else 1


if __name__ == "__main__":
    sys.exit(main())
