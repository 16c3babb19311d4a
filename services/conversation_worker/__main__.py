"""Entry point: ``python -m services.conversation_worker`` (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging

from services.common.settings import Settings
from services.common.telemetry import setup

_LOG = logging.getLogger("services.conversation_worker")


async def run(settings: Settings) -> None:
    """Connect, consume and serve health until a signal stops the HTTP server."""
    # Imported after setup(): in standalone mode otel.configure() instruments these libraries.
    import redis.asyncio as aioredis
    from fastapi import FastAPI

    from services.common import db
    from services.common.http import add_health_routes, consume_and_serve, install_error_handlers
    from services.common.kafka import (
        CONVERSATION_EVENTS,
        TOOL_RESULTS,
        TopicTail,
        ensure_topics,
        kafka_reachable,
        new_event_consumer,
        new_producer,
    )
    from services.conversation_worker.budget import Budgets
    from services.conversation_worker.slm import SlmClient
    from services.conversation_worker.worker import (
        PendingTools,
        Worker,
        validate_event,
        validate_tool_result,
    )
    from services.faults import FaultState, WorkerFaults, faults_router
    from services_instrumentation.conversation_worker import create_instruments

    pool = await db.connect(settings.postgres_dsn)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=3)
    await ensure_topics(settings.kafka_bootstrap)
    producer = await new_producer(settings.kafka_bootstrap)
    slm = SlmClient(settings.slm_base_url, settings.slm_model, settings.slm_max_tokens,
                    settings.slm_timeout)
    faults = FaultState(WorkerFaults, settings.faults_json)
    unstuck = asyncio.Event()
    pending = PendingTools()
    worker = Worker(pool, Budgets(redis), slm, producer, create_instruments(), pending,
                    faults.current, unstuck, settings.tool_result_timeout)

    def apply(current: WorkerFaults) -> None:
        worker.faults = current
        if current.consumer_stuck:
            unstuck.clear()
        else:
            unstuck.set()

    faults.on_change(apply)
    tail = TopicTail(TOOL_RESULTS, pending.resolve, validator=validate_tool_result,
                     guard_group="conversation-worker-dlq-guard",
                     bootstrap=settings.kafka_bootstrap, name="tool results")
    await tail.start()
    consumer = new_event_consumer(
        CONVERSATION_EVENTS, worker.handle, bootstrap=settings.kafka_bootstrap,
        group_id="conversation-worker", validator=validate_event,
    )
    await consumer.start()

    app = FastAPI(title="SomaAgent conversation worker")
    install_error_handlers(app)
    app.include_router(faults_router(faults))

    async def kafka_ok() -> bool:
        return await kafka_reachable(settings.kafka_bootstrap)

    async def redis_ok() -> bool:
        try:
            return bool(await redis.ping())
        except (OSError, aioredis.RedisError):
            return False

    async def postgres_ok() -> bool:
        return await db.postgres_reachable(pool)

    add_health_routes(app, {"kafka": kafka_ok, "redis": redis_ok, "postgres": postgres_ok,
                            "slm": slm.reachable})
    _LOG.info("conversation worker ready", extra={"port": settings.worker_port})
    try:
        await consume_and_serve(consumer, app, settings.bind_host, settings.worker_port,
                                name="conversation consumer", on_stopping=unstuck.set)
    finally:
        await tail.stop()
        await producer.stop()
        await slm.close()
        await redis.aclose()
        await pool.close()


def main() -> None:
    """Configure telemetry, then run the worker until stopped."""
    telemetry = setup("conversation-worker")
    try:
        asyncio.run(run(Settings.from_env()))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
