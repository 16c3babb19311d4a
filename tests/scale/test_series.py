"""Exact series on the scale profile: two replicas of each consumer, one agent-tier writer.

On the scale profile the agent collector computes every RED series (spanmetrics) and receives
every service metric, before any trace leaves for the gateway tier, so the counts cannot
depend on how traces are balanced. Two properties:

* the exact-count workload of ``tests/pipeline/test_exact_counts.py`` (its own helper, run
  unchanged) moves every spec series by exactly its count. Its poisoned messages must fail on
  whichever worker replica owns their partition, so the poison marker is set on both replicas
  (that test alone sets it on the first replica's port only);
* the RED series of the consumers carry each replica as its own ``instance``
  (``conversation-worker-1``/``-2``, ``tool-executor-1``/``-2``), both replicas do work when the
  workload spans every partition, and the per-instance growths sum to exactly the workload.
"""

from __future__ import annotations

import uuid

import pytest

from services.common.kafka import CONVERSATION_REPLIES
from tests import live
from tests.pipeline.test_exact_counts import _workload_and_checks
from tests.scale import harness

pytestmark = [pytest.mark.scale, pytest.mark.usefixtures("scale")]

#: RED series per consumer replica: (job, counter with its fixed labels).
REPLICA_SERIES = {
    "conversation-worker": 'conversation_requests_total{job="conversation-worker"}',
    "tool-executor": ('tool_execution_total{job="tool-executor",tool_name="calculate",'
                      'status="success"}'),
}
SESSIONS = 24  # keys over 3 partitions: every partition gets some ((2/3)^24 < 1e-4 misses one)


@pytest.mark.timeout(900)
async def test_exact_count_workload_moves_every_series_by_exactly_its_count() -> None:
    """The exact-count workload, poisoned on both worker replicas, moves each spec series by
    exactly its count with two replicas of each consumer and three brokers."""
    harness.reset_all_faults()
    marker = f"#poison-{uuid.uuid4().hex[:8]}"
    harness.set_poison_marker(marker)
    try:
        await _workload_and_checks(marker)
    finally:
        harness.reset_all_faults()


def _by_instance() -> dict[str, dict[str, float]]:
    """Each consumer's RED counter per instance (live series)."""
    return {
        job: {r["metric"]["instance"]: float(r["value"][1]) for r in live.prom_query(
            f"sum by (instance) (last_over_time({selector}[15s]))")}
        for job, selector in REPLICA_SERIES.items()
    }


@pytest.mark.timeout(600)
async def test_red_series_carry_both_replicas_and_their_sum_is_exact() -> None:
    """Conversations and tool calls over every partition grow both replicas' series, labelled
    NAME-1 and NAME-2, and the two growths add up to exactly the workload."""
    harness.reset_all_faults()
    before = live.settled(_by_instance, 20, 300, "the consumers' RED series to stop moving")
    replies_start = await harness.end_offsets(CONVERSATION_REPLIES)
    dlq_start = await harness.end_offsets(harness.DLQ)
    load = await harness.open_load(seconds=8, rate=6, sessions=SESSIONS, marker="#unused",
                                   poison_every=10**9)
    assert load.statuses == {202: 48} and not load.errors, (load.statuses, load.errors)
    seen = await harness.outcome(load.accepted, replies_start, dlq_start, timeout=120)
    assert not seen.lost(load.accepted) and not seen.dead, seen

    after = live.settled(_by_instance, 20, 300, "the consumers' RED series to stop moving")
    expected = {"conversation-worker": len(load.accepted), "tool-executor": load.tools}
    figures = {}
    for job, total in expected.items():
        grown = harness.growth(after[job], before[job])
        figures[job] = grown
        assert set(grown) == {f"{job}-1", f"{job}-2"}, (job, grown)
        assert all(v > 0 for v in grown.values()), (job, grown)
        assert sum(grown.values()) == total, (job, grown, total)
    print(f"RED growth per replica: {figures}")
