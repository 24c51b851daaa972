"""The local control socket of `ovis serve` (as xnbd-wrapper-ctl).

One JSON request per connection, one JSON reply:

    {"op": "list"}                          -> {"ok": true, "exports": [...]}
    {"op": "add", "export": {...}}          -> {"ok": true}
    {"op": "remove", "name": "disk"}        -> {"ok": true}
    {"op": "snapshot", "name": "disk"}      -> {"ok": true, "paths": ["..."]}
    {"op": "migrate-start", "name": "disk", "destination": URI, "max_rate": N|null}
    {"op": "migrate-status|-cancel|-complete|-switch|-fill", "name": "disk"}
    {"op": "migrate-reconnect", "name": "disk", "source": URI|null}
    {"op": "migrate-rate", "name": "disk", "max_rate": N|null}
                                            -> {"ok": true, "status": {...}}
    {"op": "handover", "name": "disk", "to": ADDRESS|null}   (single-writer exports)
    {"op": "writer", "name": "disk"}        -> {"ok": true, "status": {"writer": ...}}

Failures come back as {"ok": false, "error": "one line"}.  The socket lives
in a directory only its user can enter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from ovis._units import parse_size

from ._config import ConfigError, parse_allow
from ._exports import ExportTable
from ._spec import ExportError, ExportSpec

log = logging.getLogger("ovis.serve")
MAX_REQUEST = 64 * 1024


def default_control_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(runtime) / f"ovis-{os.getuid()}" / "serve.sock"


class ControlError(Exception):
    """The control request failed; the message is for the user."""


def spec_from_request(entry: Any) -> ExportSpec:
    if not isinstance(entry, dict):
        raise ControlError("malformed request: 'export' must be an object")
    allow = entry.get("allow", [])
    cow_persist = entry.get("cow_persist")
    try:
        return ExportSpec(
            name=str(entry["name"]),
            path=str(Path(entry["path"]).resolve()),
            readonly=bool(entry.get("readonly", False)),
            cow=bool(entry.get("cow", False)) or cow_persist is not None,
            cow_persist=None if cow_persist is None else str(Path(cow_persist).resolve()),
            description=str(entry.get("description", "")),
            allow=parse_allow([allow] if isinstance(allow, str) else allow, "allow"),
            size=parse_size(entry["size"]) if entry.get("size") is not None else None,
            single_writer=bool(entry.get("single_writer", False)),
        )
    except KeyError as exc:
        raise ControlError(f"export needs {exc.args[0]!r}") from None
    except (ValueError, ConfigError) as exc:
        raise ControlError(str(exc)) from None
    except (TypeError, AttributeError) as exc:  # JSON of the wrong shape
        raise ControlError(f"malformed export: {exc}") from None


async def handle_request(table: ExportTable, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    try:
        if op == "list":
            return {"ok": True, "exports": [s.to_dict() for s in table.specs()]}
        if op == "add":
            await table.add(spec_from_request(request.get("export", {})))
            return {"ok": True}
        name = request.get("name")
        if name is not None and not isinstance(name, str):
            raise ControlError("malformed request: 'name' must be a string")
        if op == "remove":
            await table.remove(str(name))
            return {"ok": True}
        if op == "snapshot":
            paths = [await table.snapshot(name)] if name else await table.snapshot_all()
            return {"ok": True, "paths": paths}
        if op == "handover":
            to = request.get("to")
            if to is not None:
                to = _address(to)
            return {"ok": True, "status": await table.handover(str(name), to)}
        if op == "writer":
            return {"ok": True, "status": table.writer_status(str(name))}
        if isinstance(op, str) and op.startswith("migrate-"):
            return {"ok": True, "status": await _migrate(table, op, str(name), request)}
    except (ExportError, ControlError) as exc:
        return {"ok": False, "error": str(exc)}
    except OSError as exc:
        return {"ok": False, "error": f"{op} failed: {exc.strerror or exc}"}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def _migrate(
    table: ExportTable, op: str, name: str, request: dict[str, Any]
) -> dict[str, Any]:
    migration = table.migration(name)
    if op == "migrate-status":
        return migration.status()
    if op == "migrate-start":
        if table.hold_elsewhere is not None:
            # A mirror tracks writes in this process; workers' writes would escape it.
            raise ControlError("ovis migrate needs a server running without --workers")
        destination, rate = request.get("destination"), request.get("max_rate")
        if not isinstance(destination, str) or not isinstance(rate, int | float | None):
            raise ControlError("malformed request: needs 'destination' (and a numeric max_rate)")
        return await migration.start(destination, max_rate=rate)
    if op == "migrate-cancel":
        return await migration.cancel()
    if op == "migrate-complete":
        return await migration.complete()
    if op == "migrate-switch":
        return await migration.switch()
    if op == "migrate-fill":
        return migration.fill()
    if op == "migrate-rate":
        rate = request.get("max_rate")
        if not isinstance(rate, int | float | None) or (rate is not None and rate <= 0):
            raise ControlError("malformed request: 'max_rate' must be positive or null")
        return migration.set_rate(rate)
    if op == "migrate-reconnect":
        source = request.get("source")
        if not isinstance(source, str | None):
            raise ControlError("malformed request: 'source' must be an NBD URI")
        return await migration.reconnect(source)
    raise ControlError(f"unknown op {op!r}")


def _address(value: Any) -> str:
    """A client host for `handover --to`: an IP address, or "local" (unix sockets)."""
    if value == "local":
        return "local"
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ControlError(f"{value!r} is not an IP address (or 'local')") from None


class ControlServer:
    def __init__(self, table: ExportTable, path: Path) -> None:
        self.table = table
        self.path = path
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.exists():
            if _alive(self.path):
                raise ControlError(
                    f"control socket {self.path} is in use by another ovis serve; "
                    "pass --control PATH"
                )
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._client, str(self.path))
        os.chmod(self.path, 0o600)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):  # no newline within the limit
                line = b"x" * (MAX_REQUEST + 1)
            if len(line) > MAX_REQUEST:
                reply: dict[str, Any] = {"ok": False, "error": "request too large"}
            else:
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    reply = {"ok": False, "error": f"malformed request: {exc}"}
                else:
                    reply = await handle_request(self.table, request)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError as exc:
            log.warning("control client error: %s", exc)
        except asyncio.CancelledError:
            # The server is stopping.  Python 3.11's start_unix_server logs a
            # cancelled handler as an error (with a traceback), so end quietly.
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def control_request(path: Path, request: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Send one request to a running server (blocking; used by the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlError(
                f"no ovis serve is listening on {path} ({exc.strerror}); "
                "start one or pass --control PATH"
            ) from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"no answer from ovis serve on {path}: {exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise ControlError(f"ovis serve on {path} gave no answer (see its log)")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "request failed")))
    return reply
