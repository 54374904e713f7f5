"""Zipkin tracing for the aiohttp client."""

from .propagation import B3Format

__all__ = ("B3Format",)
