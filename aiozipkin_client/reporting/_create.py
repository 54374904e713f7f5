"""``create``: a drop-in for ``aiozipkin.create`` that reports through :class:`ZipkinTransport`."""

from __future__ import annotations

from aiozipkin.context_managers import _ContextManager
from aiozipkin.helpers import Endpoint
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from yarl import URL

from ._transport import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_GZIP_LEVEL,
    DEFAULT_GZIP_THRESHOLD,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_RETRY_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
    DEFAULT_SEND_INTERVAL,
    DEFAULT_SEND_TIMEOUT,
    ZipkinTransport,
    _require,
    _require_type,
)

__all__ = ("create",)


def create(
    zipkin_address: str | URL,
    local_endpoint: Endpoint,
    *,
    sample_rate: float = 0.01,
    send_interval: float = DEFAULT_SEND_INTERVAL,
    ignored_exceptions: list[type[Exception]] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    gzip_threshold: int | None = DEFAULT_GZIP_THRESHOLD,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY,
) -> _ContextManager[Tracer]:
    """A drop-in for ``aiozipkin.create``: a ``Tracer`` that reports via :class:`ZipkinTransport`.

    Same arguments and same result as ``aiozipkin.create`` (await it, or use it with
    ``async with``, which closes the tracer and so flushes the transport). The extra keyword
    options are those of :class:`ZipkinTransport`. Invalid options raise ``ValueError`` (or
    ``TypeError`` for a value of the wrong kind) here, at the call; nothing else ever raises.

    >>> import aiozipkin
    >>> async def main() -> None:
    ...     endpoint = aiozipkin.create_endpoint("checkout", ipv4="10.0.0.7", port=8080)
    ...     async with create(
    ...         "http://127.0.0.1:9411/api/v2/spans", endpoint, sample_rate=1.0
    ...     ) as tracer:
    ...         with tracer.new_trace() as span:
    ...             span.name("charge card")
    """
    if not isinstance(local_endpoint, Endpoint):
        raise TypeError(
            "local_endpoint must be an aiozipkin Endpoint, such as"
            f" aiozipkin.create_endpoint('checkout'), not {local_endpoint!r}"
        )
    _require_type("sample_rate", sample_rate, (int, float), "a number from 0.0 to 1.0")
    # 10 meaning 10% would sample everything: a rate is a fraction.
    _require(0.0 <= sample_rate <= 1.0, f"sample_rate must be from 0.0 to 1.0, not {sample_rate!r}")
    # Built now so that a bad option fails at the call site; it starts nothing until used.
    transport = ZipkinTransport(
        zipkin_address,
        send_interval=send_interval,
        batch_size=batch_size,
        max_queue_size=max_queue_size,
        send_timeout=send_timeout,
        close_timeout=close_timeout,
        gzip_threshold=gzip_threshold,
        gzip_level=gzip_level,
        retry_delay=retry_delay,
        retry_max_delay=retry_max_delay,
    )
    sampler = Sampler(sample_rate=sample_rate)

    async def build_tracer() -> Tracer:
        return Tracer(transport, sampler, local_endpoint, ignored_exceptions)

    return _ContextManager(build_tracer())
