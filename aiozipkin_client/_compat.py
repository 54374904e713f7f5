"""Everything that differs between the aiohttp versions we support (3.10 to 3.14), in one place.

The rest of the package asks this module, never ``aiohttp.__version__``. Each difference is
detected by what the installed aiohttp has (a name, an attribute), not by its version number, so
a backport or a patch release that changes it is handled as it is.

The differences, as measured by the test suite on each supported version:

* ``web.RequestKey`` exists from 3.14 (earlier: plain string keys): :func:`request_key`.
* aiohttp 3.10 sends ``on_request_chunk_sent(b"")`` for a request without a body (from 3.11 it
  sends nothing): :func:`sent_bytes` counts bytes, and an empty chunk is no body.
* ``ResponseHandler.closed``, a future that completes when the connection closes, exists from
  3.12: :func:`closed_future`. Before, nothing tells a caller that a connection under an unread
  body was closed (by ``session.close()``); the client then learns it when the response is
  released or collected, by asking :func:`is_connected`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiohttp.client
from aiohttp import web
from aiohttp.client_proto import ResponseHandler

__all__ = (
    "SIGNALS_CLOSE",
    "closed_future",
    "has_no_authority",
    "is_connected",
    "request_key",
    "sent_bytes",
)

_T = TypeVar("_T")

#: ``web.RequestKey`` (aiohttp 3.14+): typed keys for ``request[...]``; aiohttp 3.14 warns about
#: plain string keys. Earlier versions have no such class and take the string itself.
_REQUEST_KEY: Final[Any] = getattr(web, "RequestKey", None)

if TYPE_CHECKING:
    # The type checker runs against the newest aiohttp, which has the class.
    from aiohttp.web import RequestKey


def request_key(name: str, value_type: type[_T]) -> RequestKey[_T]:
    """A key for ``request[...]``: a ``web.RequestKey`` where aiohttp has it, else ``name``.

    With a plain string, ``request[key]`` works the same on aiohttp before 3.14, untyped.
    """
    if _REQUEST_KEY is None:
        return name  # type: ignore[return-value]
    key: RequestKey[_T] = _REQUEST_KEY(name, value_type)
    return key


#: aiohttp 3.14's test for a Location such as ``http:/path`` or ``http:path`` (a scheme, then no
#: ``//``), which it resolves against the current URL as browsers do when the scheme is the current
#: one. Earlier versions have no such rule: they refuse that Location as an invalid redirect.
_HAS_NO_AUTHORITY: Final[Any] = getattr(aiohttp.client, "_has_no_authority", None)


def has_no_authority(location: str, scheme: str) -> bool:
    """True where this aiohttp reads ``location`` (with ``scheme``) as relative to the current URL.

    Asks aiohttp's own rule where it has one, so the answer is exactly the one it acts on.
    """
    if _HAS_NO_AUTHORITY is None:
        return False
    return bool(_HAS_NO_AUTHORITY(location, scheme))


def sent_bytes(chunk: bytes | bytearray | memoryview) -> int:
    """The bytes of request body one ``on_request_chunk_sent`` reports; 0 means no body.

    aiohttp 3.10 writes the empty body of a GET as one empty chunk and reports it; later
    versions write nothing. Counting bytes makes both mean the same: no body was sent.
    """
    return chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)


#: Whether aiohttp says when a connection closes (``ResponseHandler.closed``, 3.12+).
SIGNALS_CLOSE: Final = hasattr(ResponseHandler, "closed")


def closed_future(protocol: ResponseHandler) -> asyncio.Future[None] | None:
    """A future that completes when the connection closes, or None where aiohttp has none.

    aiohttp 3.12+ has ``ResponseHandler.closed``; it is None once the connection has closed
    (before anyone asked). Earlier versions have no such attribute: see :func:`is_connected`.
    """
    closed = getattr(protocol, "closed", None)
    return closed if isinstance(closed, asyncio.Future) and not closed.done() else None


def is_connected(protocol: ResponseHandler) -> bool:
    """Whether the connection is still open (every supported version can say).

    This is how the end of a connection is noticed where :func:`closed_future` is None: when
    the response is released, a connection already closed beneath its body was lost.
    """
    return protocol.is_connected()
