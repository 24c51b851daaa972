"""CPU time and peak memory of a server's process tree, read from /proc.

CPU is utime+stime+cutime+cstime summed over the live tree: a child that has
exited and been reaped (nbd-server forks one per connection) shows up in its
parent's cutime/cstime instead, so nothing is counted twice or lost.
Peak RSS is the largest sum of VmRSS over the tree seen by a 20 Hz poller,
or the root's VmHWM if that is larger.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def descendants(pid: int) -> list[int]:
    """pid and every live descendant, parents first."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            children = _read(f"/proc/{current}/task/{task}/children") or ""
            todo.extend(int(child) for child in children.split())
    return tree


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    """(CPU seconds including reaped children, resident bytes) of one process."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return 0.0, 0
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3, "state"
    if fields[0] in ("Z", "X"):
        return 0.0, 0
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS, int(fields[21]) * PAGE_SIZE


def tree_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) summed over pid's live process tree."""
    cpu, rss = 0.0, 0
    for member in descendants(pid):
        member_cpu, member_rss = _cpu_and_rss(member)
        cpu += member_cpu
        rss += member_rss
    return cpu, rss


def thread_count(pid: int) -> int:
    """Threads in pid's live process tree: how many tasks the scheduler can run at once."""
    total = 0
    for member in descendants(pid):
        with contextlib.suppress(FileNotFoundError):
            total += len(os.listdir(f"/proc/{member}/task"))
    return total


def high_water_mark(pid: int) -> int:
    """The root process's own peak RSS (VmHWM) in bytes, 0 if unknown."""
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent neither idle nor waiting on I/O (steal counts)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has reaped (the clients)."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + reaped.ru_utime + reaped.ru_stime


class TreeMonitor:
    """Poll a process tree in a thread; report CPU used, peak RSS and peak threads."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.peak_threads = 0
        self._cpu_at_start = tree_usage(pid)[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="tree-monitor", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        rss = max(tree_usage(self.pid)[1], high_water_mark(self.pid))
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_threads = max(self.peak_threads, thread_count(self.pid))

    def cpu_seconds(self) -> float:
        """CPU seconds the tree has used since the monitor started."""
        return tree_usage(self.pid)[0] - self._cpu_at_start

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
