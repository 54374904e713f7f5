"""Reporting spans to a Zipkin collector: one span model, a bounded buffer, a transport that does no harm.

The parts, each readable alone:

* ``_model``: the :class:`~._model.Span` model (msgspec Structs) and its encoding. Foreign
  aiozipkin records are checked once by :func:`encode_span`'s rules when they enter; our own spans
  are built valid. A batch is encoded in one call when it is posted.
* ``_buffer``: the bounded FIFO of spans waiting to be posted, :class:`ReportingStats`, and the
  rate-limited log of dropped spans.
* ``_transport``: :class:`ZipkinTransport`: ``send()`` queues and returns; one background task
  posts batches, retries with backoff and never lets the collector's trouble reach the app.
* ``_create``: :func:`create`, a drop-in for ``aiozipkin.create`` that reports through it.
"""

from __future__ import annotations

from ._buffer import ReportingStats
from ._create import create
from ._model import InvalidSpanError, encode_span
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
)

__all__ = (
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_GZIP_LEVEL",
    "DEFAULT_GZIP_THRESHOLD",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_RETRY_MAX_DELAY",
    "DEFAULT_SEND_INTERVAL",
    "DEFAULT_SEND_TIMEOUT",
    "InvalidSpanError",
    "ReportingStats",
    "ZipkinTransport",
    "create",
    "encode_span",
)
