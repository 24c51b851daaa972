"""nbdinfo --list: every export of a --config server, with its description."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, make_image, need, run

from ._support import MiB, nbdinfo_json

pytestmark = pytest.mark.interop


@pytest.fixture
def configured(serve: Callable[..., Served], tmp_path: Path) -> Served:
    boot = make_image(tmp_path / "boot.img", 16 * MiB)
    golden = make_image(tmp_path / "golden.img", 8 * MiB)
    scratch = make_image(tmp_path / "scratch.img", 4 * MiB, pattern=False)
    config = tmp_path / "exports.toml"
    config.write_text(
        f"""
default = "boot"

[exports.boot]
path = "{boot}"
description = "boot disk"

[exports.golden]
path = "{golden}"
description = "golden image, read-only ✓"
readonly = true

[exports.scratch]
path = "{scratch}"
cow = true
"""
    )
    return serve("--config", str(config), "--port", "0")


def test_list_names_and_describes_every_export(configured: Served) -> None:
    need("nbdinfo")
    document = nbdinfo_json(configured.uri(""), "--list")
    exports = {e["export-name"]: e for e in document["exports"]}
    assert sorted(exports) == ["boot", "golden", "scratch"]
    assert exports["boot"]["description"] == "boot disk"
    assert exports["golden"]["description"] == "golden image, read-only ✓"
    assert "description" not in exports["scratch"]
    assert exports["boot"]["export-size"] == 16 * MiB
    assert exports["golden"]["export-size"] == 8 * MiB
    assert exports["golden"]["is_read_only"] is True
    assert exports["boot"]["is_read_only"] is False
    assert exports["scratch"]["can_multi_conn"] is False


def test_list_in_text_form(configured: Served) -> None:
    need("nbdinfo")
    text = run(["nbdinfo", "--list", configured.uri("")]).stdout
    for line in ('export="boot":', "description: boot disk", 'export="golden":'):
        assert line in text


def test_each_export_and_the_default_answer(configured: Served) -> None:
    need("nbdinfo")
    for name, size in (("boot", 16), ("golden", 8), ("scratch", 4), ("", 16)):
        (export,) = nbdinfo_json(configured.uri(name))["exports"]
        assert export["export-size"] == size * MiB, name
    missing = run(["nbdinfo", configured.uri("nope")], check=False)
    assert missing.returncode != 0
