"""Fixtures shared by every test: the live stack, checked once per session.

Tests that claim something about the pipeline take the ``stack`` fixture. It never starts or
skips anything: when a component is not ready it fails, naming the component, the check and
the log file, so that CI shows what is missing (``.ci/run`` brings the stack up first).
"""

from __future__ import annotations

import pytest

from stack.components import components, running_profile
from stack.stackctl import stack_paths


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that stop stack components (marked ``outage``) after all the others."""
    items.sort(key=lambda item: item.get_closest_marker("outage") is not None)


@pytest.fixture(scope="session")
def stack() -> None:
    """Fail the test unless every stack component passes its readiness check."""
    paths = stack_paths()
    problems = [
        f"{c.name}: {problem} (check: {c.check_text}; log: {paths.logs / (c.name + '.log')})"
        for c in components(paths, running_profile(paths))
        if (problem := c.check()) is not None
    ]
    if problems:
        pytest.fail("stack components not ready (run `stack/stack up`):\n" + "\n".join(problems))
