"""`ovis serve --proxy` refuses a bitmap that is corrupt or not this cache's, in one line.

Each case is a real start-up (run side by side) that must exit non-zero
with one `Error:` line naming the problem and no traceback, and must leave
the files as they were.
"""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Callable
from pathlib import Path

from ovis.migrate import PersistentBitmap
from tests.conftest import OVIS, Served

from .helpers import MiB

SIZE = 4 * MiB
BLOCK = 64 * 1024


def _bitmap(path: Path, *, disk_size: int = SIZE, block_size: int = BLOCK, cached: int = 0) -> Path:
    bitmap = PersistentBitmap.open(path, block_size=block_size, disk_size=disk_size)
    bitmap.set(0, cached)
    bitmap._write_pages([(0, bitmap.to_bytes())])  # as a sync would
    bitmap.close()
    return path


def _cache(path: Path, size: int = SIZE) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_bad_bitmaps_are_refused(serve: Callable[..., Served], tmp_path: Path) -> None:
    image = _cache(tmp_path / "src.img")
    source = serve(str(image), "--name", "disk")
    garbage = tmp_path / "garbage.bitmap"
    garbage.write_bytes(b"\x13\x37" * 5000)
    empty = tmp_path / "empty.bitmap"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.bitmap"
    truncated.write_bytes(_bitmap(tmp_path / "t.bitmap").read_bytes()[:20])
    other_disk = _bitmap(tmp_path / "other-disk.bitmap", disk_size=2 * SIZE)
    other_block = _bitmap(tmp_path / "other-block.bitmap", block_size=4096)
    orphan = _bitmap(tmp_path / "orphan.bitmap", cached=10)  # its cache is gone
    longer = tmp_path / "longer.bitmap"
    longer.write_bytes(_bitmap(tmp_path / "l.bitmap").read_bytes() + bytes(8192))
    busy = _bitmap(tmp_path / "busy.bitmap")
    cases = {
        garbage: "is not an ovis bitmap",
        empty: "is not an ovis bitmap",
        truncated: "is truncated: its header is incomplete",
        other_disk: f"is for a {2 * SIZE}-byte disk in {BLOCK}-byte blocks",
        other_block: f"is for a {SIZE}-byte disk in 4096-byte blocks",
        orphan: "marks 10 blocks as cached, but cache",
        longer: "is longer than its header says",
        busy: "is in use elsewhere",
    }
    before = {path: path.read_bytes() for path in cases}
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running proxy would
        procs = {
            path: subprocess.Popen(
                [
                    *OVIS,
                    "serve",
                    *("--proxy", source.uri("disk"), "--bitmap", str(path)),
                    *("--cache", str(_cache(tmp_path / f"{path.stem}.cache", 0))),
                    *("--port", "0", "--control", str(tmp_path / f"{path.stem}.sock")),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in cases
        }
        results = {path: proc.communicate(timeout=30) for path, proc in procs.items()}
    for path, (_, stderr) in results.items():
        assert procs[path].returncode == 1, (path, stderr)
        assert "Traceback" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and cases[path] in errors[0], (path, stderr)
        assert path.read_bytes() == before[path], f"{path.name} was changed"
    assert not list(tmp_path.glob("*.tmp")), "a half-made bitmap was left behind"


def test_missing_source_export_is_one_line(serve: Callable[..., Served], tmp_path: Path) -> None:
    source = serve(str(_cache(tmp_path / "src.img")), "--name", "disk")
    out = subprocess.run(
        [
            *OVIS,
            "serve",
            *("--proxy", source.uri("nope"), "--cache", str(tmp_path / "c.img")),
            *("--bitmap", str(tmp_path / "c.bitmap"), "--control", str(tmp_path / "c.sock")),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("Error: ") and "cannot proxy" in out.stderr, out.stderr
    assert not (tmp_path / "c.bitmap").exists(), "a failed start must not leave a new bitmap"
