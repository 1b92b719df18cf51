"""A static HTTP/1.1 server for calibrating the load generator: every request, keep-alive
and pipelined ones included, gets ``204 No Content`` with no work behind it.

    python -m benchmarks.static_server PORT
"""

from __future__ import annotations

import asyncio
import sys

RESPONSE = b"HTTP/1.1 204 No Content\r\nServer: static\r\n\r\n"


class StaticProtocol(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # bodyless requests only (wrk and the benchmark client send none)
        n = self.buffer.count(b"\r\n\r\n")
        if n:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * n)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StaticProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
