"""SIGKILLs under load: nothing lost, no reply duplicated, the RED series exact afterwards.

Each test runs an open-loop workload (``RATE`` messages a second for ``LOAD_S`` s over
``SESSIONS`` sessions: plain, tool and poisoned messages) and, ``KILL_AT_S`` s in, sends
SIGKILL to one component's process, keeps it down for ``DOWN_S`` s and starts it again
(``harness.sigkill_and_hold``). The components, one per test:

* ``otel-gateway-2``, a gateway-tier collector: the agent keeps that gateway's share of the
  traces in its persistent queue; the counts are the agent's and must not notice;
* ``kafka-2``, one broker of three: the topics keep two in-sync replicas, so producers with
  ``acks=all`` and the consumer groups carry on;
* ``conversation-worker-2``, one consumer replica: its partitions move to the other replica,
  which gets the uncommitted records again; a restarted replica has no fault switches, so the
  poison marker is set on it again once it is ready.

Then, for the messages the gateway accepted (202): each is replied to (an assistant row in
PostgreSQL and one record on ``conversation.replies``) or dead-lettered (``conversation.events
.dlq``, poisoned messages only), none both, none neither (0 lost), no reply twice (0
duplicated, in the store or on the topic); and ``http_requests_total`` of the message posts
grew by exactly the posts answered, per status (the RED series stayed exact through the kill).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from services.common.kafka import CONVERSATION_REPLIES
from stack.stackctl import control
from tests.scale import harness
from tests.services import kit

pytestmark = [pytest.mark.scale, pytest.mark.outage, pytest.mark.usefixtures("scale")]

RATE = 3.0  # messages a second
LOAD_S = 45  # seconds of workload
SESSIONS = 12  # keys over the 3 partitions: both worker replicas get work
POISON_EVERY = 15  # every 15th message carries the poison marker
KILL_AT_S = 10  # the kill, seconds into the workload
DOWN_S = 15  # seconds the killed component stays down


async def _kill_under_load(component: str, marker: str) -> dict[str, Any]:
    """Run the workload with ``component`` killed and restarted; assert; return the figures."""
    before = harness.settled_posts_by_status()
    replies_start = await harness.end_offsets(CONVERSATION_REPLIES)
    dlq_start = await harness.end_offsets(harness.DLQ)
    workload = asyncio.create_task(harness.open_load(LOAD_S, RATE, SESSIONS, marker,
                                                     POISON_EVERY))
    await asyncio.sleep(KILL_AT_S)
    killed = time.monotonic()
    await asyncio.to_thread(harness.sigkill_and_hold, component)
    await asyncio.sleep(DOWN_S)
    assert await asyncio.to_thread(control, "start", [component]) == 0, component
    back = time.monotonic() - killed
    if component == "conversation-worker-2":
        kit.set_faults(harness.WORKERS[1], poison_marker=marker)
    load = await workload
    assert not load.errors, load.errors[:5]

    seen = await harness.outcome(load.accepted, replies_start, dlq_start, timeout=240)
    replied, dead = set(seen.stored), set(seen.dead)
    figures: dict[str, Any] = {
        "component": component, "statuses": dict(load.statuses),
        "accepted": len(load.accepted), "replied": len(replied), "dead_lettered": len(dead),
        "poisoned": len(load.poison), "lost": len(seen.lost(load.accepted)),
        "dlq_records": sum(seen.dead.values()), "reply_records": sum(seen.published.values()),
        "down_to_ready_s": round(back, 1), "slowest_post_s": round(load.slowest, 2),
    }
    print(f"kill figures: {figures}")
    assert not seen.lost(load.accepted), figures
    assert not replied & dead, (replied & dead, figures)
    assert dead <= load.poison, (dead - load.poison, figures)
    assert len(replied) + len(dead) == len(load.accepted), figures
    assert [m for m, n in seen.stored.items() if n != 1] == [], figures
    assert {m: n for m, n in seen.published.items() if n != 1} == {}, figures
    assert set(seen.published) == replied, figures

    expected = {str(status): float(n) for status, n in load.statuses.items()}
    grown = harness.growth(harness.settled_posts_by_status(), before)
    figures["http_requests_total_growth"] = grown
    assert grown == expected, figures
    return figures


@pytest.mark.timeout(600)
@pytest.mark.parametrize("component", ["otel-gateway-2", "kafka-2", "conversation-worker-2"])
async def test_sigkill_under_load_loses_nothing_duplicates_no_reply_keeps_red_exact(
    component: str,
) -> None:
    """SIGKILL of the component mid-workload, then its restart: accepted = replied +
    dead-lettered, 0 lost, 0 duplicated replies, http_requests_total exact per status."""
    harness.reset_all_faults()
    marker = f"#poison-{uuid.uuid4().hex[:8]}"
    harness.set_poison_marker(marker)
    try:
        await _kill_under_load(component, marker)
    finally:
        if harness.process_state(component) != "RUNNING":
            assert control("start", [component]) == 0, component
        harness.reset_all_faults()
