"""Helpers shared by the interop tests: real clients, driven as subprocesses.

Every helper runs a real tool (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh)
through `run`, which puts Debian's /usr/bin first so that nbdsh finds the
python3 that has the `nbd` module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import Served, run

KiB = 1024
MiB = 1024 * KiB
IMAGE_SIZE = 64 * MiB
PATTERN_MIB = bytes(range(256)) * 4096


def client_env() -> dict[str, str]:
    """The environment `run` gives clients, for the few that need Popen."""
    env = dict(os.environ)
    env["PATH"] = "/usr/bin:" + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    return env


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def nbdsh(uri: str, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in nbdsh with `h` connected to `uri`."""
    # tls-certificates=DIR in a URI counts as local file access, off by default.
    setup = "h.set_uri_allow_local_file(True); h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)"
    return run(["nbdsh", "-c", setup, "-u", uri, "-c", textwrap.dedent(script)], check=check)


def python3_nbd(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet under Debian's python3 (with python3-libnbd); argv[1:] = args."""
    return run(["/usr/bin/python3", "-c", textwrap.dedent(script), *args], check=check)


def qemu_io(
    image: list[str], *commands: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """qemu-io on `image` (qemu image arguments); fails on any failed command."""
    args = ["qemu-io"]
    for command in commands:
        args += ["-c", command]
    result = run([*args, *image], check=check)
    if check:
        bad = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if "failed" in line.lower() or "error" in line.lower()
        ]
        assert not bad, f"qemu-io reported failures: {bad}\n{result.stdout}{result.stderr}"
    return result


def nbdinfo_json(uri: str, *extra: str) -> dict[str, Any]:
    result = run(["nbdinfo", "--json", *extra, uri])
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def export_info(uri: str) -> dict[str, Any]:
    """nbdinfo --json's description of the one export `uri` names."""
    document = nbdinfo_json(uri)
    (export,) = document["exports"]
    info: dict[str, Any] = export
    return info


Extent = tuple[int, int, bool]  # (start, length, is_data)


def merge(extents: list[Extent]) -> list[Extent]:
    """Join neighbouring extents of the same kind, so two maps compare equal."""
    out: list[Extent] = []
    for start, length, data in extents:
        if out and out[-1][2] == data and out[-1][0] + out[-1][1] == start:
            prev = out.pop()
            out.append((prev[0], prev[1] + length, data))
        else:
            out.append((start, length, data))
    return out


def qemu_img_map(image: list[str]) -> list[Extent]:
    """`qemu-img map --output=json`, as merged (start, length, is_data) extents."""
    result = run(["qemu-img", "map", "--output=json", *image])
    entries = json.loads(result.stdout)
    return merge([(e["start"], e["length"], bool(e["data"])) for e in entries])


def nbdinfo_map(uri: str) -> list[Extent]:
    """`nbdinfo --map --json` (base:allocation), as merged extents; data means not a hole."""
    result = run(["nbdinfo", "--map", "--json", uri])
    entries = json.loads(result.stdout)
    return merge([(e["offset"], e["length"], not e["type"] & 1) for e in entries])


def data_ranges(extents: list[Extent]) -> list[tuple[int, int]]:
    return [(start, start + length) for start, length, data in extents if data]


def covered(extents: list[Extent], start: int, end: int, *, data: bool) -> bool:
    """Whether every byte of [start, end) lies in extents of kind `data`."""
    pos = start
    for s, length, is_data in extents:
        if s <= pos < s + length:
            if is_data != data:
                return False
            pos = s + length
            if pos >= end:
                return True
    return pos >= end


def port_of(served: Served) -> int:
    match = re.search(r":(\d+)/", served.uri_base)
    assert match, served.uri_base
    return int(match[1])


def qemu_image(uri: str) -> list[str]:
    """qemu-img/qemu-io arguments naming an NBD export by URI, raw over NBD."""
    return ["-f", "raw", uri]


def nbdcopy(src: str, dst: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """nbdcopy with up to 4 connections (and 4 threads, so 2 cores do not cap it)."""
    return run(["nbdcopy", "--connections=4", "--threads=4", *extra, src, dst])
