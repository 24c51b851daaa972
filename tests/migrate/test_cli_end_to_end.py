"""Migration through the CLI, with real server processes on loopback.

Proxy: `ovis serve --proxy` in front of a source server serves the source's
data at once, fills in the background, never writes to the source, and after
`switch` keeps serving with the source gone.  Mirror: `ovis migrate start`
copies a live export to another server while a client writes; `complete`
makes the destination equal to the source and refuses later source writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ovis.nbd.client import NbdClient, NbdError
from tests.conftest import OVIS, Served, make_image

MiB = 1 << 20


def migrate(served: Served, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [*OVIS, "migrate", *args, "--control", str(served.control), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_proxy_serves_fills_and_switches(serve: Callable[..., Served], tmp_path: Path) -> None:
    source_image = make_image(tmp_path / "source.img", 32 * MiB)
    before = sha(source_image)
    source = serve(str(source_image), "--name", "src")
    cache, bitmap = tmp_path / "cache.img", tmp_path / "cache.bitmap"
    proxy = serve(
        "--proxy",
        source.uri("src"),
        "--cache",
        str(cache),
        "--bitmap",
        str(bitmap),
        "--name",
        "disk",
        "--max-rate",
        "16M",
    )

    async def read_and_write() -> None:
        client = await NbdClient.connect(proxy.uri("disk"))
        assert await client.read(0, 4096) == bytes(range(256)) * 16  # on demand
        assert await client.read(30 * MiB, 4096) == (bytes(range(256)) * 16)
        await client.write(5 * MiB, b"\xee" * MiB)
        await client.flush()
        assert await client.read(5 * MiB, MiB) == b"\xee" * MiB
        await client.aclose()

    asyncio.run(read_and_write())
    watched = subprocess.run(  # the progress bar returns once the fill is complete
        [*OVIS, "migrate", "watch", "disk", "--control", str(proxy.control)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert watched.returncode == 0, watched.stderr
    assert "proxy disk: complete" in watched.stdout
    assert migrate(proxy, "status", "disk")["proxy"]["complete"]  # type: ignore[index]
    assert migrate(proxy, "switch", "disk")["proxy"]["switched"]  # type: ignore[index]
    assert source.stop() == 0
    assert sha(source_image) == before, "the proxy wrote to its source"

    async def after_switch() -> bytes:
        client = await NbdClient.connect(proxy.uri("disk"))
        data = await client.read(0, 32 * MiB)
        await client.aclose()
        return data

    expected = bytearray(source_image.read_bytes())
    expected[5 * MiB : 6 * MiB] = b"\xee" * MiB
    assert asyncio.run(after_switch()) == bytes(expected)


def test_mirror_with_a_live_writer_completes_equal(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    src_image = make_image(tmp_path / "src.img", 32 * MiB)
    dst_image = tmp_path / "dst.img"
    dst_image.write_bytes(b"")
    with open(dst_image, "r+b") as f:
        f.truncate(32 * MiB)
    source = serve(str(src_image), "--name", "disk")
    destination = serve(str(dst_image), "--name", "disk")
    stop = asyncio.Event()
    refused: list[bool] = []

    async def writer() -> None:
        client = await NbdClient.connect(source.uri("disk"))
        n = 0
        try:
            while not stop.is_set():
                offset = (n * 131 % 256) * 128 * 1024
                await client.write(offset, bytes([n % 250 + 1]) * 4096)
                n += 1
                if n % 16 == 0:
                    await client.flush()
                await asyncio.sleep(0.002)
        except NbdError as exc:
            refused.append(exc.errno == 1)  # EPERM once the source is retired
        finally:
            await client.aclose()

    async def main() -> dict[str, object]:
        task = asyncio.create_task(writer())
        await asyncio.sleep(0.3)
        started = await asyncio.to_thread(migrate, source, "start", "disk", destination.uri("disk"))
        assert started["mirror"] is not None
        await asyncio.sleep(0.5)
        done = await asyncio.to_thread(migrate, source, "complete", "disk")
        await asyncio.sleep(0.2)
        stop.set()
        await task
        return done

    done = asyncio.run(main())
    mirror = done["mirror"]
    assert isinstance(mirror, dict)
    assert mirror["state"] == "done" and mirror["downtime_ms"] is not None
    assert done["retired"] is True
    assert refused == [True], "writes after complete must get EPERM"
    assert destination.stop() == 0 and source.stop() == 0
    assert sha(src_image) == sha(dst_image)


def test_migrate_refuses_bad_requests(serve: Callable[..., Served], image: Path) -> None:
    served = serve(str(image), "--name", "disk")
    for args in (["complete", "disk"], ["switch", "disk"], ["status", "nope"]):
        out = subprocess.run(
            [*OVIS, "migrate", *args, "--control", str(served.control)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out
        assert out.stderr.startswith("Error: ") and "Traceback" not in out.stderr
    out = subprocess.run(
        [
            *OVIS,
            "migrate",
            "start",
            "disk",
            "nbd://127.0.0.1:1/none",
            "--control",
            str(served.control),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "cannot start mirror" in out.stderr


@pytest.mark.parametrize("args", [["--cache", "x"], ["--proxy", "nbd://h/e"]])
def test_proxy_arguments_are_checked(args: list[str], tmp_path: Path) -> None:
    out = subprocess.run([*OVIS, "serve", *args], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
