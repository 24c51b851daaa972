"""Socket options: a Unix connection gets a send buffer that holds large replies."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from ovis._net import UNIX_SEND_BUFFER, widen_unix_send_buffer


def _wmem_max() -> int:
    return int(Path("/proc/sys/net/core/wmem_max").read_text())


def test_a_unix_socket_send_buffer_grows_as_far_as_the_kernel_allows() -> None:
    async def scenario() -> int:
        a, b = socket.socketpair()
        with a, b:
            before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            _, writer = await asyncio.open_unix_connection(sock=a)
            widen_unix_send_buffer(writer)
            after = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            writer.close()
            await writer.wait_closed()
            assert after >= before
            return after

    after = asyncio.run(scenario())
    # The kernel doubles what it grants (bookkeeping) and caps the request at wmem_max.
    assert after == 2 * min(UNIX_SEND_BUFFER, _wmem_max())


def test_tcp_sockets_keep_their_own_tuning() -> None:
    async def scenario() -> tuple[int, int]:
        accepted: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        widen_unix_send_buffer(writer)
        after = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        writer.close()
        await writer.wait_closed()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
        return before, after

    before, after = asyncio.run(scenario())
    assert before == after
