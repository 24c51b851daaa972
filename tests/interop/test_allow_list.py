"""--allow / allow = [...]: clients outside the list can neither use nor see an export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served, make_image, need, run

from ._support import MiB, export_info, nbdinfo_json, qemu_image

pytestmark = pytest.mark.interop


def test_allow_list_on_the_command_line(serve: Callable[..., Served], image: Path) -> None:
    need("nbdinfo", "qemu-img")
    allowed = serve(str(image), "--name", "disk", "--port", "0", "--allow", "127.0.0.0/8")
    assert export_info(allowed.uri("disk"))["export-size"] == 64 * MiB
    denied = serve(str(image), "--name", "disk", "--port", "0", "--allow", "10.0.0.0/8")
    assert run(["nbdinfo", denied.uri("disk")], check=False).returncode != 0
    assert run(["qemu-img", "info", *qemu_image(denied.uri("disk"))], check=False).returncode
    assert denied.proc.poll() is None


def test_listing_hides_what_a_client_may_not_use(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    need("nbdinfo")
    public = make_image(tmp_path / "public.img", 4 * MiB)
    private = make_image(tmp_path / "private.img", 4 * MiB)
    config = tmp_path / "exports.toml"
    config.write_text(
        f'[exports.public]\npath = "{public}"\n'
        f'[exports.private]\npath = "{private}"\nallow = ["192.0.2.0/24"]\n'
    )
    served = serve("--config", str(config), "--port", "0")
    names = [e["export-name"] for e in nbdinfo_json(served.uri(""), "--list")["exports"]]
    assert names == ["public"]
    assert run(["nbdinfo", served.uri("private")], check=False).returncode != 0
