"""The stack's controller: failures are loud and name the component, its check and its log."""

from __future__ import annotations

import pytest

from stack.components import Component, http_check
from stack.stackctl import _wait_ready, control, stack_paths


def test_a_component_that_never_gets_ready_is_named_with_its_check_and_log() -> None:
    """Waiting on a component whose check cannot pass reports its name, check and log file."""
    paths = stack_paths()
    ghost = Component(
        "ghost",
        1,
        ["true"],
        http_check("http://127.0.0.1:9/"),
        "GET 127.0.0.1:9/",
        startup_seconds=1,
    )
    (failure,) = _wait_ready(paths, [ghost])
    assert failure.startswith("ghost: check 'GET 127.0.0.1:9/' failed: unreachable")
    assert failure.endswith(f"log: {paths.logs / 'ghost.log'}")


@pytest.mark.usefixtures("stack")
def test_controlling_an_unknown_component_is_refused_with_the_known_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stack/stack stop NAME` with an unknown name exits 2 and lists the components."""
    assert control("stop", ["no-such-component"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unknown component(s): no-such-component; known: redis, postgres")
