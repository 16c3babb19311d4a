"""Backoff arithmetic and the settings EventConsumer refuses (no broker needed)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from otel.dlq import Backoff, EventConsumer, RetryPolicy


def test_backoff_ceiling_doubles_from_initial_up_to_the_cap() -> None:
    """The n-th ceiling is initial * 2**(n-1), capped at maximum, even for huge n."""
    backoff = Backoff(initial=0.25, maximum=3.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.ceiling(10_000) == 3.0


def test_backoff_delays_are_full_jitter_within_zero_and_the_ceiling() -> None:
    """Delays fall in [0, ceiling] and spread over it (mean near ceiling / 2)."""
    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(20251126))
    for failures in range(1, 6):
        delays = [backoff.delay(failures) for _ in range(2000)]
        ceiling = backoff.ceiling(failures)
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert abs(sum(delays) / len(delays) - ceiling / 2) < ceiling * 0.05


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Backoff(initial=0.0), "0 < initial <= maximum"),
        (lambda: Backoff(initial=2.0, maximum=1.0), "0 < initial <= maximum"),
        (lambda: RetryPolicy(max_attempts=0), "max_attempts must be >= 1"),
    ],
)
def test_nonsensical_retry_settings_are_rejected(make: Any, message: str) -> None:
    """Backoff and RetryPolicy refuse values that would never wait or never run."""
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("option", "config"),
    [
        ("consumer_config", {"enable_auto_commit": True}),
        ("consumer_config", {"value_deserializer": bytes}),
        ("producer_config", {"acks": 1}),
        ("producer_config", {"enable_idempotence": False}),
    ],
)
def test_event_consumer_refuses_settings_its_guarantees_depend_on(
    option: str, config: dict[str, Any]
) -> None:
    """Auto-commit, weaker acks, no idempotence or serialisers cannot be configured in."""

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        return None

    options: dict[str, Any] = {option: config}
    with pytest.raises(ValueError, match=f"{option} may not set {next(iter(config))}"):
        EventConsumer(["t"], handle, bootstrap_servers="127.0.0.1:9092", group_id="g", **options)
