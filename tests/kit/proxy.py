"""A forward HTTP proxy on 127.0.0.1 that records what reached it (the proxy's own view).

It serves the two ways aiohttp talks to a proxy: a plain ``http://`` URL is sent to the
proxy whole (``GET http://host:port/path``), which forwards it; an ``https://`` URL is tunnelled
(``CONNECT host:port``), after which the proxy only moves bytes it cannot read. It forwards to
127.0.0.1 only, and answers ``407`` when ``credentials`` are set and the request lacks them.
Every read is bounded in size and time.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from multidict import CIMultiDict
from yarl import URL

__all__ = ("ForwardProxy", "ProxyRequest", "start_proxy")

#: The most a request head may take, and how long the proxy waits for one.
_HEAD_LIMIT = 64 * 1024
_HEAD_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProxyRequest:
    """One request as the proxy saw it: ``CONNECT 127.0.0.1:443`` or ``GET http://...``."""

    method: str
    target: str
    headers: CIMultiDict[str]


@dataclass
class ForwardProxy:
    """What the proxy saw, and its URL (``url``; with ``credentials`` in it if it wants some)."""

    credentials: tuple[str, str] | None = None
    requests: list[ProxyRequest] = field(default_factory=list)
    url: URL = field(default_factory=URL)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _authorised(self, headers: CIMultiDict[str]) -> bool:
        if self.credentials is None:
            return True
        user, password = self.credentials
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return headers.get("Proxy-Authorization") == f"Basic {token}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers.add(name.strip(), value.strip())
        self.requests.append(ProxyRequest(method, target, headers))
        if not self._authorised(headers):
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            first = b""
        else:
            url = URL(target)
            host, port = url.host or "", str(url.port)
            kept = "".join(
                f"{name}: {value}\r\n"
                for name, value in headers.items()
                if name.lower() not in ("proxy-authorization", "proxy-connection")
            )
            first = f"{method} {url.raw_path_qs} HTTP/1.1\r\n{kept}\r\n".encode("latin-1")
        if host != "127.0.0.1":  # tests never leave this machine
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(first)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from one side to the other until either closes."""
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def start_proxy(credentials: tuple[str, str] | None = None) -> AsyncIterator[ForwardProxy]:
    """Serve a :class:`ForwardProxy` on a random port of 127.0.0.1."""
    proxy = ForwardProxy(credentials)
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0, limit=_HEAD_LIMIT)
    port = server.sockets[0].getsockname()[1]
    proxy.url = URL.build(scheme="http", host="127.0.0.1", port=port)
    if credentials is not None:
        proxy.url = proxy.url.with_user(credentials[0]).with_password(credentials[1])
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        for task in list(proxy._tasks):
            with suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()
