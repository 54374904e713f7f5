"""Runnable examples: ``python examples/simple_client.py``, ``python -m examples.demo``,
``python -m examples.services SERVICE``."""
