"""SIGHUP re-reads --config: new exports appear, removed ones go, a bad file changes nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

from ovis.nbd import Command
from ovis.nbd.client import list_exports
from tests.conftest import Served, make_image

from .helpers import PATTERN, assert_serving, connected, wait_for_log


def config_text(exports: dict[str, tuple[Path, str]]) -> str:
    return "".join(
        f'[exports.{name}]\npath = "{path}"\ndescription = "{text}"\n\n'
        for name, (path, text) in exports.items()
    )


def wait_for_listing(served: Served, expected: list[tuple[str, str]]) -> None:
    deadline = time.monotonic() + 10
    while (listed := asyncio.run(list_exports(served.uri()))) != expected:
        assert time.monotonic() < deadline, f"still listing {listed}"
        time.sleep(0.05)


def test_sighup_reloads_a_changed_config(serve: Callable[..., Served], tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.img", 8 << 20)
    b = make_image(tmp_path / "b.img", 8 << 20)
    c = make_image(tmp_path / "c.img", 8 << 20)
    config = tmp_path / "exports.toml"
    config.write_text(config_text({"a": (a, "first"), "b": (b, "second")}))
    served = serve("--config", str(config), "--port", "0")
    assert asyncio.run(list_exports(served.uri())) == [("a", "first"), ("b", "second")]
    on_b = connected(served, "b")
    try:
        config.write_text(config_text({"a": (a, "first"), "c": (c, "third")}))
        served.signal(signal.SIGHUP)
        wait_for_listing(served, [("a", "first"), ("c", "third")])
        assert_serving(served, "c")
        # A client of the removed export keeps its session.
        assert on_b.call(Command.WRITE, 0, 4, data=b"kept").error == 0
        assert on_b.call(Command.READ, 0, 4).data == b"kept"

        # A broken file is refused (logged) and the running exports stay.
        config.write_text("[exports.a\npath = ")
        served.signal(signal.SIGHUP)
        wait_for_log(served, "not valid TOML")
        assert asyncio.run(list_exports(served.uri())) == [("a", "first"), ("c", "third")]
        assert_serving(served, "a", PATTERN)
    finally:
        on_b.disconnect()
    assert served.stop() == 0
    assert b.read_bytes()[:4] == b"kept"


def test_reload_that_cannot_open_an_image_changes_nothing(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    a = make_image(tmp_path / "a.img", 8 << 20)
    b = make_image(tmp_path / "b.img", 8 << 20)
    config = tmp_path / "exports.toml"
    config.write_text(config_text({"a": (a, "first"), "b": (b, "second")}))
    served = serve("--config", str(config), "--port", "0")
    # "a" now points at a missing image, "c" is new: all or nothing.
    config.write_text(
        config_text({"a": (tmp_path / "gone.img", "first"), "b": (b, "second"), "c": (b, "third")})
    )
    served.signal(signal.SIGHUP)
    wait_for_log(served, "gone.img does not exist")
    assert asyncio.run(list_exports(served.uri())) == [("a", "first"), ("b", "second")]
    assert_serving(served, "a")
    # Fixed, the next SIGHUP applies it in the file's order.
    config.write_text(config_text({"c": (b, "third"), "a": (a, "first again")}))
    served.signal(signal.SIGHUP)
    wait_for_listing(served, [("c", "third"), ("a", "first again")])
    assert_serving(served, "c")
