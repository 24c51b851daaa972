"""Process plumbing shared by the long-running commands: logging, pidfile, daemonize."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import click

T = TypeVar("T")


def setup_logging(verbose: int, log_file: str | None, use_syslog: bool) -> None:
    handler: logging.Handler
    if use_syslog:
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("ovis[%(process)d]: %(name)s: %(message)s"))
    elif log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ovis: %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


@contextlib.contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    Path(path).write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def daemonize() -> Callable[[str | None], None]:
    """Detach into the background; returns `report(error)` for the daemon to call once.

    The foreground process waits until the daemon reports that it is ready
    (error None) or failed (a one-line message), and exits 0 or 1 accordingly,
    so `ovis serve --daemonize` still fails visibly on a bad argument.
    """
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode()
        if message == "ok":
            os._exit(0)
        sys.stderr.write(message or "ovis: daemon exited during start-up\n")
        os._exit(1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    reported = False

    def report(error: str | None) -> None:
        nonlocal reported
        if not reported:
            reported = True
            os.write(write_end, b"ok" if error is None else error.encode())
            os.close(write_end)

    return report


def run_service(
    run: Callable[[Callable[[T], None]], int],
    announce: Callable[[T], str],
    *,
    daemon: bool,
    pid_path: str | None,
    failures: tuple[type[Exception], ...],
    logger: str,
) -> NoReturn:
    """Run a long-lived command in the foreground or as a daemon, then exit.

    `run(ready)` serves until stopped and returns the exit status; it calls
    `ready(where)` once listening, and `announce(where)` is the line that
    tells the user (and, for a daemon whose stderr is gone, the log) where.
    """
    report = daemonize() if daemon else None

    def ready(where: T) -> None:
        line = announce(where)
        click.echo(line, err=True)
        if report is not None:
            logging.getLogger(logger).warning("%s", line)
            report(None)

    with pidfile(pid_path):
        try:
            status = run(ready)
        except failures as exc:
            if report is not None:
                report(f"Error: {exc}\n")
            raise click.ClickException(str(exc)) from None
    sys.exit(status)
