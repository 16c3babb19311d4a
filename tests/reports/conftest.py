"""The report tests drive the real services: they reuse the services fixture."""

from tests.services.conftest import services

__all__ = ["services"]
