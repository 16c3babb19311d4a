"""Entry point: ``python -m services.tool_executor`` (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging

from services.common.settings import Settings
from services.common.telemetry import setup

_LOG = logging.getLogger("services.tool_executor")


async def run(settings: Settings) -> None:
    """Connect, consume and serve health until a signal stops the HTTP server."""
    # Imported after setup(): in standalone mode otel.configure() instruments these libraries.
    from fastapi import FastAPI

    from services.common import db
    from services.common.http import add_health_routes, consume_and_serve, install_error_handlers
    from services.common.kafka import (
        TOOL_REQUESTS,
        ensure_topics,
        kafka_reachable,
        new_event_consumer,
        new_producer,
    )
    from services.faults import DeterministicRatio, ExecutorFaults, FaultState, faults_router
    from services.tool_executor.executor import Executor, validate_request
    from services_instrumentation.tool_executor import create_instruments

    pool = await db.connect(settings.postgres_dsn)
    await ensure_topics(settings.kafka_bootstrap)
    producer = await new_producer(settings.kafka_bootstrap)
    faults = FaultState(ExecutorFaults, settings.faults_json)
    executor = Executor(pool, producer, create_instruments(), faults.current,
                        DeterministicRatio())

    def apply(current: ExecutorFaults) -> None:
        executor.faults = current
        executor.failure_ratio.reset(current.tool_failure_ratio)

    faults.on_change(apply)
    consumer = new_event_consumer(
        TOOL_REQUESTS, executor.handle, bootstrap=settings.kafka_bootstrap,
        group_id="tool-executor", validator=validate_request,
    )
    await consumer.start()

    app = FastAPI(title="SomaAgent tool executor")
    install_error_handlers(app)
    app.include_router(faults_router(faults))

    async def kafka_ok() -> bool:
        return await kafka_reachable(settings.kafka_bootstrap)

    async def postgres_ok() -> bool:
        return await db.postgres_reachable(pool)

    add_health_routes(app, {"kafka": kafka_ok, "postgres": postgres_ok})
    _LOG.info("tool executor ready", extra={"port": settings.executor_port})
    try:
        await consume_and_serve(consumer, app, settings.bind_host, settings.executor_port,
                                name="tool request consumer")
    finally:
        await producer.stop()
        await pool.close()


def main() -> None:
    """Configure telemetry, then run the executor until stopped."""
    telemetry = setup("tool-executor")
    try:
        asyncio.run(run(Settings.from_env()))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
