"""Numbers for docs/migration.md; run by hand, not in CI (about two minutes).

    .venv/bin/python -m tests.migrate.measure_migration [--mib 256] [--reps 3]

1. Total time to move a MIB-MiB export of random data between two ovis
   servers on loopback, idle: the mirror (`migrate start` to `complete`),
   the proxy (server ready to fill complete, then switch), and a plain
   `nbdcopy` between the same two kinds of server.
2. The mirror's final write pause (downtime_ms): idle, and while fio
   writes random 4 KiB blocks at 2000 IOPS and unthrottled (QD8).
3. 4 KiB random-read latency at QD1 (fio, p50 / p99): a plain export; a
   proxy while its fill runs at 32 and at 128 MiB/s, over 16 MiB already
   cached (what the fill costs other reads) and, at 32 MiB/s, over the
   whole disk (cached and not yet cached blocks: on-demand fetches); the
   proxy after the switch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Served, start_ovis

from .helpers import MiB
from .live import control, proxy_status, random_image


class Servers:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Served] = []

    def serve(self, *args: str) -> Served:
        served = start_ovis(list(args), self.workdir, timeout=30)
        self.started.append(served)
        return served

    def stop_all(self) -> None:
        for served in self.started:
            if served.proc.poll() is None:
                served.stop()
        self.started.clear()


def _empty(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _poll(check: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        time.sleep(0.01)


def time_mirror(servers: Servers, image: Path, target: Path) -> float:
    source = servers.serve(str(image), "--name", "disk")
    dest = servers.serve(str(target), "--name", "disk")
    started = time.monotonic()
    control(source, "migrate-start", destination=dest.uri("disk"), max_rate=None)
    control(source, "migrate-complete")
    elapsed = time.monotonic() - started
    servers.stop_all()
    return elapsed


def time_proxy(servers: Servers, image: Path, tmp: Path) -> float:
    source = servers.serve(str(image), "--name", "disk")
    cache, bitmap = tmp / "cache.img", tmp / "cache.bitmap"
    for path in (cache, bitmap):
        path.unlink(missing_ok=True)
    started = time.monotonic()
    proxy = servers.serve(
        "--proxy", source.uri("disk"), "--cache", str(cache), "--bitmap", str(bitmap)
    )
    ready = time.monotonic()
    name = cache.name
    _poll(lambda: bool(proxy_status(proxy, name)["complete"]))
    control(proxy, "migrate-switch", name)
    done = time.monotonic()
    servers.stop_all()
    print(f"    (proxy process start-up {ready - started:.2f} s, not counted)")
    return done - ready


def time_nbdcopy(servers: Servers, image: Path, target: Path) -> float:
    source = servers.serve(str(image), "--name", "disk")
    dest = servers.serve(str(target), "--name", "disk")
    started = time.monotonic()
    subprocess.run(["nbdcopy", source.uri("disk"), dest.uri("disk")], check=True)
    elapsed = time.monotonic() - started
    servers.stop_all()
    return elapsed


def fio_json(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["fio", "--name=m", "--ioengine=nbd", "--output-format=json", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    text = out.stdout[out.stdout.index("{") :]
    result: dict[str, Any] = json.loads(text)
    return result


def mirror_pause(servers: Servers, image: Path, target: Path, load: list[str] | None) -> float:
    source = servers.serve(str(image), "--name", "disk")
    dest = servers.serve(str(target), "--name", "disk")
    writer = None
    if load is not None:
        command = ["fio", "--name=w", "--ioengine=nbd", f"--uri={source.uri('disk')}"]
        command += ["--rw=randwrite", "--bs=4k", "--iodepth=8", "--time_based", "--runtime=60"]
        writer = subprocess.Popen(
            [*command, "--size=100%", *load],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
    control(source, "migrate-start", destination=dest.uri("disk"), max_rate=None)
    _poll(lambda: control(source, "migrate-status")["mirror"]["state"] == "ready")
    stats = control(source, "migrate-status")["mirror"]
    if writer is not None:
        writer.terminate()
        writer.wait()
    control(source, "migrate-cancel")
    servers.stop_all()
    passes = stats["passes"]
    print(
        f"    {len(passes)} passes, last dirty {passes[-1]['dirty_bytes'] / MiB:.1f} MiB, "
        f"pause {stats['downtime_ms']:.1f} ms"
    )
    return float(stats["downtime_ms"])


def read_latency(uri: str, size_mib: int, seconds: int, offset_mib: int = 0) -> tuple[float, float]:
    result = fio_json(
        f"--uri={uri}",
        "--rw=randread",
        "--bs=4k",
        "--iodepth=1",
        f"--offset={offset_mib}M",
        f"--size={size_mib}M",
        "--time_based",
        f"--runtime={seconds}",
    )
    pct = result["jobs"][0]["read"]["clat_ns"]["percentile"]
    return pct["50.000000"] / 1000, pct["99.000000"] / 1000


def latencies(servers: Servers, image: Path, tmp: Path, mib: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    source = servers.serve(str(image), "--name", "disk")
    out["plain export, anywhere"] = read_latency(source.uri("disk"), mib, 3)
    for rate, seconds in (("32M", 2), ("128M", 1)):
        cache, bitmap = tmp / f"lat-{rate}.img", tmp / f"lat-{rate}.bitmap"
        proxy = servers.serve(
            *("--proxy", source.uri("disk"), "--cache", str(cache), "--bitmap", str(bitmap)),
            *("--name", "disk", "--max-rate", rate),
        )
        uri = proxy.uri("disk")
        fio_json(f"--uri={uri}", "--rw=read", "--bs=1M", "--size=16M")  # now cached
        out[f"fill at {rate}/s, cached blocks"] = read_latency(uri, 16, seconds)
        if rate == "32M":
            out[f"fill at {rate}/s, anywhere"] = read_latency(uri, mib, seconds)
        assert not proxy_status(proxy)["complete"], "the fill finished too early to measure"
    control(proxy, "migrate-rate", max_rate=None)
    _poll(lambda: bool(proxy_status(proxy)["complete"]))
    control(proxy, "migrate-switch")
    out["proxy after switch, anywhere"] = read_latency(uri, mib, 3)
    servers.stop_all()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MiB
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        tmp = Path(work)
        servers = Servers(tmp)
        image = random_image(tmp / "src.img", size, 7)
        try:
            print(f"1. total time to move {args.mib} MiB of random data (median of {args.reps})")
            runs: list[tuple[str, Callable[[], float]]] = [
                ("mirror", lambda: time_mirror(servers, image, _empty(tmp / "dst.img", size))),
                ("proxy fill", lambda: time_proxy(servers, image, tmp)),
                ("nbdcopy", lambda: time_nbdcopy(servers, image, _empty(tmp / "dst.img", size))),
            ]
            for label, run in runs:
                times = [run() for _ in range(args.reps)]
                print(f"  {label:12} {statistics.median(times):6.2f} s  {times}")
            print("2. mirror final write pause")
            for label, load in (
                ("idle", None),
                ("fio 2000 IOPS", ["--rate_iops=,2000"]),
                ("fio unthrottled", []),
            ):
                pauses = [
                    mirror_pause(servers, image, _empty(tmp / "dst.img", size), load)
                    for _ in range(args.reps)
                ]
                median = statistics.median(pauses)
                print(f"  {label:16} median {median:7.1f} ms  max {max(pauses):.1f}")
            print("3. 4 KiB random reads at QD1 (p50 / p99, microseconds)")
            for label, (p50, p99) in latencies(servers, image, tmp, args.mib).items():
                print(f"  {label:40} {p50:8.0f} {p99:8.0f}")
        finally:
            servers.stop_all()


if __name__ == "__main__":
    main()
