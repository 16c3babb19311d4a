"""Runnable examples of both setup modes (see docs/setup.md)."""
