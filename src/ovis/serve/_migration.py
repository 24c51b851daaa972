"""Live storage migration of one export: a mirror job out, or a proxy filling in.

Every export's shared stack has a `MirrorFilter` (a pass-through until a job
attaches).  `ovis migrate start` attaches a `MirrorJob` towards a destination
NBD export; `complete` waits until the job is ready, then, with writes held,
finishes it and retires the source: from then on writes to the source get
EPERM, so nothing can be acknowledged on the copy that is no longer
authoritative.  A proxy export (`ovis serve --proxy`) fills its cache from
the source in the background; `switch` drops the source once it is complete,
and `reconnect` gives it a new connection (to the same or a restarted
source) after the old one failed: the fill resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ovis.block._device import BlockError
from ovis.migrate import (
    MigrationError,
    MirrorFilter,
    MirrorJob,
    MirrorState,
    ProxyFilter,
    reconnect_proxy,
    start_mirror,
)
from ovis.nbd._errors import ProtocolError
from ovis.nbd.client import NbdError

from ._gate import WriteGate
from ._spec import ExportError

_ENDED = {MirrorState.CANCELLED, MirrorState.FAILED}


def _plain(value: Any) -> Any:
    """Stats dataclasses and enums as JSON-friendly values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, BaseException):
        return str(value)
    return value


class ExportMigration:
    def __init__(
        self,
        name: str,
        gate: WriteGate,
        mirror: MirrorFilter,
        proxy: ProxyFilter | None,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.gate = gate
        self.mirror = mirror
        self.proxy = proxy
        self.source = source  # the proxy's source URI
        self.job: MirrorJob | None = None
        self.destination: str | None = None  # the mirror job's

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"export": self.name, "retired": self.gate.retired}
        if self.job is not None:
            status["mirror"] = {
                **_plain(self.job.stats),
                "destination": self.destination,
                "max_rate": self.job.limiter.rate,
            }
        if self.proxy is not None:
            progress = self.proxy.progress
            status["proxy"] = {
                **_plain(progress),
                "fraction": progress.fraction,
                "source": self.source,
                "max_rate": self.proxy.limiter.rate,
            }
        return status

    async def start(self, destination: str, *, max_rate: float | None = None) -> dict[str, Any]:
        if self.gate.retired:
            raise ExportError(f"export {self.name!r} has already migrated")
        if self.job is not None and self.job.stats.state not in _ENDED:
            raise ExportError(f"export {self.name!r} already has a mirror job")
        try:
            self.job = await start_mirror(self.mirror, destination, max_rate=max_rate)
        except (OSError, ValueError, MigrationError, ProtocolError, NbdError) as exc:
            raise ExportError(f"cannot start mirror to {destination}: {exc}") from None
        self.destination = destination
        return self.status()

    def _running_job(self) -> MirrorJob:
        if self.job is None:
            raise ExportError(f"export {self.name!r} has no mirror job")
        return self.job

    async def cancel(self) -> dict[str, Any]:
        await self._running_job().cancel()
        return self.status()

    async def complete(self) -> dict[str, Any]:
        """Wait until the mirror is ready, then make the destination authoritative."""
        job = self._running_job()
        try:
            await job.wait_ready()
            async with self.gate.held():
                await job.finish()
                self.gate.retire()
        except MigrationError as exc:
            raise ExportError(f"mirror of {self.name!r} failed: {exc}") from None
        return self.status()

    async def switch(self) -> dict[str, Any]:
        if self.proxy is None:
            raise ExportError(f"export {self.name!r} is not a proxy")
        try:
            await self.proxy.switch()
        except MigrationError as exc:
            raise ExportError(f"cannot switch {self.name!r}: {exc}") from None
        return self.status()

    def fill(self) -> dict[str, Any]:
        """Start the proxy's background fill (or restart it after an error)."""
        if self.proxy is None:
            raise ExportError(f"export {self.name!r} is not a proxy")
        try:
            self.proxy.start_fill()
        except MigrationError as exc:
            raise ExportError(f"cannot fill {self.name!r}: {exc}") from None
        return self.status()

    def set_rate(self, rate: float | None) -> dict[str, Any]:
        """Change the copy rate of the running mirror job and of the proxy fill."""
        if self.proxy is None and self.job is None:
            raise ExportError(f"export {self.name!r} has no mirror job and is not a proxy")
        if self.proxy is not None:
            self.proxy.limiter.rate = rate
        if self.job is not None:
            self.job.limiter.rate = rate
        return self.status()

    async def reconnect(self, source: str | None = None) -> dict[str, Any]:
        """Give the proxy a new connection to `source` (default: the current one)."""
        if self.proxy is None:
            raise ExportError(f"export {self.name!r} is not a proxy")
        uri = source or self.source
        assert uri is not None
        try:
            await reconnect_proxy(self.proxy, uri)
        except (OSError, ValueError, BlockError, MigrationError, ProtocolError, NbdError) as exc:
            raise ExportError(f"cannot reconnect {self.name!r} to {uri}: {exc}") from None
        self.source = uri
        return self.status()

    async def aclose(self) -> None:
        if self.job is not None:
            await self.job.aclose()
