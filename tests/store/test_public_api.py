"""ovis.store re-exports exactly its public names."""

from __future__ import annotations

import ovis.store


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in ovis.store.__all__:
        obj = getattr(ovis.store, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith("ovis.store."), name
            assert obj.__doc__, f"{name} has no docstring"


def test_no_public_class_is_left_out() -> None:
    public = {
        name
        for name, obj in vars(ovis.store).items()
        if not name.startswith("_") and isinstance(obj, type)
    }
    assert public <= set(ovis.store.__all__)
