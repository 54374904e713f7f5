"""Everything that differs between the aiohttp versions we support (3.10 to 3.14), in one place.

The rest of the package asks this module, never ``aiohttp.__version__``. Each difference is
detected by what the installed aiohttp has (a name, an attribute), not by its version number, so
a backport or a patch release that changes it is handled as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiohttp.client
from aiohttp import web

__all__ = ("has_no_authority", "request_key")

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
