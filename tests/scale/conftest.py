"""Fixtures of the scale suite: the stack must run the scale profile, every component ready.

``scale`` is the ``stack`` fixture (every component of the running profile passes its check)
plus the profile itself: on the default profile the suite fails at once, naming the command
that brings the scale profile up, instead of asserting replicas and brokers that do not exist.
"""

from __future__ import annotations

import pytest

from stack.components import running_profile
from stack.stackctl import stack_paths


@pytest.fixture(scope="session")
def scale(stack: None) -> None:
    """Fail unless the stack was brought up with ``--profile scale`` and is ready."""
    profile = running_profile(stack_paths())
    if profile != "scale":
        pytest.fail(f"the stack runs the {profile!r} profile; the scale suite needs "
                    "`stack/stack up --profile scale` (make test-scale)")
