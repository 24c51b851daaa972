"""Live storage migration of one export: a mirror job out, or a proxy filling in.

Every export's shared stack has a `MirrorFilter` (a pass-through until a job
attaches).  `ovis migrate start` attaches a `MirrorJob` towards a destination
NBD export; `complete` waits until the job is ready, then, with writes held,
finishes it and retires the source: from then on writes to the source get
EPERM, so nothing can be acknowledged on the copy that is no longer
authoritative.  A proxy export (`ovis serve --proxy`) fills its cache from
the source in the background; `switch` drops the source once it is complete.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from ovis.migrate import (
    MigrationError,
    MirrorFilter,
    MirrorJob,
    MirrorState,
    ProxyFilter,
    start_mirror,
)

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
        self, name: str, gate: WriteGate, mirror: MirrorFilter, proxy: ProxyFilter | None
    ) -> None:
        self.name = name
        self.gate = gate
        self.mirror = mirror
        self.proxy = proxy
        self.job: MirrorJob | None = None

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"export": self.name, "retired": self.gate.retired}
        if self.job is not None:
            status["mirror"] = _plain(self.job.stats)
        if self.proxy is not None:
            progress = self.proxy.progress
            status["proxy"] = {**_plain(progress), "fraction": progress.fraction}
        return status

    async def start(self, destination: str, *, max_rate: float | None = None) -> dict[str, Any]:
        if self.gate.retired:
            raise ExportError(f"export {self.name!r} has already migrated")
        if self.job is not None and self.job.stats.state not in _ENDED:
            raise ExportError(f"export {self.name!r} already has a mirror job")
        try:
            self.job = await start_mirror(self.mirror, destination, max_rate=max_rate)
        except (OSError, ValueError, MigrationError) as exc:
            raise ExportError(f"cannot start mirror to {destination}: {exc}") from None
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

    async def aclose(self) -> None:
        if self.job is not None:
            await self.job.aclose()
