"""Fixtures of the service tests: the three services, running for real under the stack.

The stack's supervisor runs the gateway (8010), the conversation worker (8011) and the tool
executor (8012) under ``opentelemetry-instrument`` with the documented environment
(``stack/components.py``); ``services`` is the ``stack`` fixture under the name the tests
read best with, and fails naming any service that is not ready.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def services(stack: None) -> None:
    """The three services answer /readyz (part of the stack's readiness check)."""
