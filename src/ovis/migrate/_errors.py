"""The migration package's one exception.

Device failures stay `BlockError` (they reach NBD clients with their errno);
`MigrationError` is for asking a proxy or a mirror job to do something its
state does not allow (switch before complete, finish before ready) and for a
job that failed or was cancelled, with the cause chained.
"""

from __future__ import annotations


class MigrationError(Exception):
    """A migration step is not possible now, or the job ended without success."""


def first_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) task-group ExceptionGroups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
