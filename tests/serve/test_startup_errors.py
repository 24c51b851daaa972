"""Mistakes at start-up end in one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import pytest

from tests.conftest import OVIS, make_image


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def ovis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OVIS, *args], capture_output=True, text=True, timeout=30)


def ovis_many(*argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several `ovis` commands side by side (each start-up costs an interpreter)."""
    procs = [
        subprocess.Popen([*OVIS, *argv], stdout=PIPE, stderr=PIPE, text=True) for argv in argvs
    ]
    results = []
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate(timeout=30)
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode not in (0, None), result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_missing_image(tmp_path: Path) -> None:
    result = ovis("serve", str(tmp_path / "nope.img"), "--control", str(tmp_path / "c"))
    assert_one_line_error(result, "nope.img does not exist")
    assert result.stderr.count("\n") == 1  # no usage text: the line is the whole story


def test_port_in_use(tmp_path: Path, busy_port: int) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    result = ovis("serve", str(image), "--port", str(busy_port), "--control", str(tmp_path / "c"))
    assert_one_line_error(result, f"port {busy_port}", "in use")
    assert result.stderr.count("\n") == 1


BAD_CONFIGS: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("missing", None, ("cannot read config",)),
    ("not-toml", "[exports.a\npath = ", ("not valid TOML",)),
    (
        "unknown-key",
        '[exports.a]\npath = "/dev/null"\nsizee = "1G"\n',
        ("unknown key", "sizee"),
    ),
    (
        "unknown-top",
        'colour = "red"\n[exports.a]\npath = "x"\n',
        ("unknown top-level", "colour"),
    ),
    ("bad-size", '[exports.a]\npath = "/dev/null"\nsize = "lots"\n', ("'lots' is not a size",)),
    ("neg-size", '[exports.a]\npath = "/dev/null"\nsize = -5\n', ("size",)),
    ("bad-allow", '[exports.a]\npath = "x"\nallow = ["nowhere"]\n', ("not an address",)),
    ("no-path", "[exports.a]\nreadonly = true\n", ("missing 'path'",)),
    ("no-exports", 'default = "a"\n', ("no [exports.NAME]",)),
    ("bad-default", 'default = "b"\n[exports.a]\npath = "x"\n', ("'b' is not defined",)),
    ("bad-bool", '[exports.a]\npath = "x"\nreadonly = "yes"\n', ("readonly must be",)),
    ("table-type", "exports = 5\n", ("exports",)),
    ("missing-image", '[exports.a]\npath = "/nonexistent.img"\n', ("does not exist",)),
]


def test_bad_config(tmp_path: Path) -> None:
    argvs = []
    for name, text, _ in BAD_CONFIGS:
        config = tmp_path / f"{name}.toml"
        if text is not None:
            config.write_text(text)
        argvs.append(["serve", "--config", str(config), "--control", str(tmp_path / name)])
    for (_, _, fragments), result in zip(BAD_CONFIGS, ovis_many(*argvs), strict=True):
        assert_one_line_error(result, *fragments)
        assert result.stderr.count("\n") == 1, result.stderr


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    result = ovis("serve", "--config", str(tmp_path), "--port", "0")
    assert_one_line_error(result, "is a directory")


def test_bad_size(tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    sizes = ["12Q", "-1", "lots", "1.5.5G"]
    results = ovis_many(*(["serve", str(image), "--size", size] for size in sizes))
    for size, result in zip(sizes, results, strict=True):
        assert_one_line_error(result, "--size", repr(size))


def test_both_or_neither_image_and_config(tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 1 << 20)
    config = write(tmp_path / "e.toml", f'[exports.a]\npath = "{image}"\n')
    for result in ovis_many(["serve"], ["serve", str(image), "--config", config]):
        assert_one_line_error(result, "IMAGE", "--config")


def test_export_list_with_no_server(tmp_path: Path) -> None:
    result = ovis("export", "list", "--control", str(tmp_path / "nobody.sock"))
    assert_one_line_error(result, "no ovis serve is listening", "nobody.sock")
    assert result.stderr.count("\n") == 1
