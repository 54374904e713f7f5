"""Benchmark of the client tracing overhead against aiozipkin and OpenTelemetry (``make bench``).

Not part of the package nor of the tests: run ``python -m bench --help``.
"""
