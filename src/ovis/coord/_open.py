"""Coordinator URLs: one string picks the backend and where it lives.

Accepted forms (the CLI's `--cluster URL`)::

    etcd://HOST:PORT[,HOST:PORT...]   an etcd cluster (its members' client URLs, http)
    sqlite:///abs/path.db             a SQLite file, shared by processes on one machine
    sqlite:relative/path.db           the same, relative to the working directory

The URL is checked before anything is opened, so a typo is a ValueError with
the accepted forms in its (one-line) message, never a connection attempt.
"""

from __future__ import annotations

import sqlite3

from ._etcd import EtcdCoordinator
from ._interface import Coordinator, Unavailable
from ._sqlite import SqliteCoordinator

URL_FORMS = "etcd://HOST:PORT[,HOST:PORT...], sqlite:///ABS/PATH.db or sqlite:REL/PATH.db"


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"bad coordinator URL {url!r}: {why}; use {URL_FORMS}")


def _etcd_endpoints(url: str) -> list[str]:
    endpoints = []
    for member in url.removeprefix("etcd://").split(","):
        host, sep, port = member.rpartition(":")
        if not sep or not host or "/" in member or not port.isdigit():
            raise _bad(url, f"{member!r} is not HOST:PORT")
        if not 0 < int(port) < 65536:
            raise _bad(url, f"port {port} is out of range")
        endpoints.append(f"http://{host}:{int(port)}")
    return endpoints


def _sqlite_path(url: str) -> str:
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/"):
            raise _bad(url, "sqlite:// takes an absolute path (three slashes)")
    else:
        path = url.removeprefix("sqlite:")
    if not path or path.endswith("/"):
        raise _bad(url, "no database file named")
    return path


def check_url(url: str) -> None:
    """Raise ValueError (one line, showing the accepted forms) unless `url` is usable."""
    if url.startswith("etcd://"):
        _etcd_endpoints(url)
    elif url.startswith("sqlite:"):
        _sqlite_path(url)
    else:
        raise _bad(url, "unknown scheme")


def open_coordinator(url: str, *, timeout: float = 5.0) -> Coordinator:
    """Return the Coordinator `url` names (see the module docstring for the forms).

    `timeout` bounds how long an etcd call keeps trying before Unavailable.
    Raises ValueError for a malformed URL, and Unavailable if the SQLite file
    cannot be opened (missing directory, not a database).  Nothing is
    contacted for etcd until the first call.
    """
    check_url(url)
    if url.startswith("etcd://"):
        return EtcdCoordinator(_etcd_endpoints(url), timeout=timeout)
    path = _sqlite_path(url)
    try:
        return SqliteCoordinator(path)
    except sqlite3.Error as exc:
        raise Unavailable(f"cannot open the SQLite coordinator {path}: {exc}") from exc
