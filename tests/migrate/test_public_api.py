"""ovis.migrate re-exports exactly its public names, each with a docstring."""

from __future__ import annotations

import ovis.migrate


def test_all_lists_the_public_names() -> None:
    assert sorted(ovis.migrate.__all__) == [
        "Bitmap",
        "Copied",
        "MigrationError",
        "MirrorFilter",
        "MirrorJob",
        "MirrorState",
        "MirrorStats",
        "PassStats",
        "PersistentBitmap",
        "ProxyFilter",
        "ProxyProgress",
        "RateLimiter",
        "copy_range",
        "open_proxy",
        "reconnect_proxy",
        "start_mirror",
    ]


def test_every_exported_name_has_a_docstring() -> None:
    for name in ovis.migrate.__all__:
        obj = getattr(ovis.migrate, name)
        assert obj.__module__.startswith("ovis.migrate."), name
        assert obj.__doc__, f"{name} has no docstring"
