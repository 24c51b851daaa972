"""The client side: fio's nbd engine and nbdcopy, and the image they work on."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20


@dataclass(frozen=True)
class FioJob:
    key: str
    rw: str
    bs: str
    iodepth: int
    unit: str  # "MiB/s" or "IOPS"


FIO_JOBS = (
    FioJob("seq_read", "read", "1M", 16, "MiB/s"),
    FioJob("rand_read", "randread", "4k", 32, "IOPS"),
    FioJob("seq_write", "write", "1M", 16, "MiB/s"),
    FioJob("rand_write", "randwrite", "4k", 32, "IOPS"),
)


class WorkloadError(RuntimeError):
    """A client failed; the message holds its output."""


def make_image(path: Path, size: int) -> None:
    """A raw image of non-zero data: every MiB allocated, each one different."""
    block = bytearray(os.urandom(MiB))
    with open(path, "wb") as image:
        for index in range(size // MiB):
            block[:8] = index.to_bytes(8, "little")
            image.write(block)
        image.write(block[: size % MiB])
        image.flush()
        os.fsync(image.fileno())


def warm_cache(path: Path) -> None:
    """Flush the last server's writes, then read the whole image into the page cache."""
    with open(path, "rb", buffering=0) as image:
        os.fsync(image.fileno())
        buffer = bytearray(4 * MiB)
        while image.readinto(buffer):
            pass


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise WorkloadError(f"{argv[0]} timed out after {timeout:.0f} s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise WorkloadError(f"{argv[0]} exited {result.returncode}: {output}")
    return result


def run_fio(job: FioJob, uri: str, runtime: float, ramp: float, output: Path) -> float:
    """Run one fio job against uri; MiB/s or IOPS as job.unit says."""
    argv = [
        "fio",
        f"--name={job.key}",
        "--ioengine=nbd",
        f"--uri={uri}",
        f"--rw={job.rw}",
        f"--bs={job.bs}",
        f"--iodepth={job.iodepth}",
        "--numjobs=1",
        "--time_based",
        f"--runtime={round(runtime * 1000)}ms",
        f"--ramp_time={round(ramp * 1000)}ms",
        "--output-format=json",
        f"--output={output}",
    ]
    _run(argv, timeout=runtime + ramp + 120)
    # fio writes its "connected to NBD server" chatter to stdout, so read JSON from --output.
    try:
        stats = json.loads(output.read_text())["jobs"][0]
        side = stats["write" if "write" in job.rw else "read"]
        value = float(side["iops"]) if job.unit == "IOPS" else float(side["bw_bytes"]) / MiB
    except (OSError, ValueError, LookupError) as exc:
        raise WorkloadError(f"fio {job.key}: unreadable output: {exc!r}") from exc
    if stats.get("error") or value <= 0:
        raise WorkloadError(f"fio {job.key}: error {stats.get('error')}, {value} {job.unit}")
    return value


def run_nbdcopy(uri: str, size: int, connections: int = 4) -> float:
    """Copy the whole export to null: with nbdcopy; MiB/s over the wall-clock time."""
    started = time.perf_counter()
    _run(["nbdcopy", f"--connections={connections}", uri, "null:"], timeout=600)
    return size / MiB / (time.perf_counter() - started)
