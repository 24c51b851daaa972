"""What every `ovis vdi` command shares: the node's API client, options and output.

The client is urllib (synchronous, stdlib): management calls are one
request each, and the CLI stays quick to start.  Data (import, export,
diff) travels over the node's NBD export instead; see _vdi_copy.py.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ovis._units import format_size, parse_size

DEFAULT_NODE = "http://127.0.0.1:10810"
F = TypeVar("F", bound=Callable[..., Any])
Volume = dict[str, Any]


class ApiError(click.ClickException):
    """The node refused a request; `kind` names the reason (e.g. volume-not-found)."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class NodeApi:
    """The node's management API (see ovis.node._api for the routes)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        # Loopback only: never send management calls through an HTTP proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=600) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise click.ClickException(
                f"cannot reach the ovis node at {self.url} ({reason}); "
                "start one with: ovis node start --data DIR"
            ) from None

    # -- the routes, by name ----------------------------------------------------

    def about(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/v1/node")
        return result

    def volumes(self) -> list[Volume]:
        result: list[Volume] = self.call("GET", "/v1/volumes")["volumes"]
        return result

    def info(self, spec: str) -> Volume:
        result: Volume = self.call("GET", f"/v1/volumes/{quote_spec(spec)}")
        return result

    def create(self, name: str, size: int, object_size: int | None = None) -> Volume:
        body: dict[str, Any] = {"name": name, "size": size}
        if object_size is not None:
            body["object_size"] = object_size
        result: Volume = self.call("POST", "/v1/volumes", body)
        return result

    def snapshot(self, name: str, tag: str | None) -> Volume:
        body = {"tag": tag} if tag is not None else {}
        result: Volume = self.call("POST", f"/v1/volumes/{quote_spec(name)}/snapshots", body)
        return result

    def resize(self, name: str, size: int, force: bool = False) -> Volume:
        body = {"size": size, "force": force}
        result: Volume = self.call("POST", f"/v1/volumes/{quote_spec(name)}/resize", body)
        return result

    def diff(self, old: str, new: str, granularity: int | None = None) -> dict[str, Any]:
        query = {"old": old, "new": new}
        if granularity is not None:
            query["granularity"] = str(granularity)
        result: dict[str, Any] = self.call("GET", "/v1/diff", query=query)
        return result

    def clone(self, snapshot: str, name: str) -> Volume:
        body = {"name": name}
        result: Volume = self.call("POST", f"/v1/volumes/{quote_spec(snapshot)}/clone", body)
        return result

    def rollback(self, name: str, tag: str) -> Volume:
        body = {"tag": tag}
        result: Volume = self.call("POST", f"/v1/volumes/{quote_spec(name)}/rollback", body)
        return result

    def delete(self, spec: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("DELETE", f"/v1/volumes/{quote_spec(spec)}")
        return result

    def tree(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/tree")["tree"]
        return result

    def gc(self) -> dict[str, int]:
        result: dict[str, int] = self.call("POST", "/v1/gc")
        return result

    def find(self, spec: str) -> Volume | None:
        """The volume, or None if the node has none by that name."""
        try:
            return self.info(spec)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def nbd_uri(self, spec: str) -> str:
        template: str = self.about()["nbd_uri"]
        return template.replace("{name}", quote_spec(spec))


def quote_spec(spec: str) -> str:
    return urllib.parse.quote(spec, safe="@")


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(exc.read())
        return ApiError(exc.code, str(body["error"]), str(body.get("kind", "")))
    except (ValueError, KeyError, TypeError):
        return ApiError(exc.code, f"the node answered {exc.code} {exc.reason}", "http")


# -- options ------------------------------------------------------------------


def check_idle(api: NodeApi, volume: Volume) -> None:
    """Refuse to overwrite a volume that NBD clients (a running VM?) have open.

    A client that has just left may still be counted for a moment.
    """
    deadline = time.monotonic() + 0.5
    while volume["connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
        volume = api.info(volume["spec"])
    if volume["connections"]:
        raise click.ClickException(
            f"volume {volume['spec']!r} has {volume['connections']} NBD connection(s); "
            "disconnect them before overwriting it"
        )


def node_option(f: F) -> F:
    return click.option(
        "--node",
        "node_url",
        envvar="OVIS_NODE",
        default=DEFAULT_NODE,
        show_default=True,
        help="The node's management API (env OVIS_NODE).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def size_argument(text: str, what: str = "size") -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.ClickException(f"invalid {what}: {exc}") from None


# -- output -------------------------------------------------------------------


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Plain aligned columns; the columns numbered in `right` are right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def volume_row(volume: Volume) -> list[str]:
    return [
        volume["spec"],
        format_size(volume["size"]),
        format_size(volume["used_bytes"]),
        format_size(volume["shared_bytes"]),
        "-" if volume["snapshot"] else str(volume["snapshot_count"]),
        when(volume["created"]),
    ]


VOLUME_HEADERS = ("NAME", "SIZE", "USED", "SHARED", "SNAPSHOTS", "CREATED")
VOLUME_RIGHT = (1, 2, 3, 4)


def volume_summary(verb: str, volume: Volume) -> str:
    return f"{verb} {volume['spec']} ({format_size(volume['size'])})"


def progress(length: int, label: str, quiet: bool) -> Any:
    """A click progress bar on stderr if it is a terminal (not with --quiet or --json)."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    return click.progressbar(
        length=max(length, 1), label=label, file=sys.stderr, show_percent=True, show_eta=True
    )


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None
