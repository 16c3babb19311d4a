"""Exit 0 when the Kafka broker at argv[1] answers a metadata request, else 1 with the reason."""

import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def _main(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


if __name__ == "__main__":
    try:
        asyncio.run(_main(sys.argv[1]))
    except Exception as exc:
        sys.exit(f"kafka not ready: {type(exc).__name__}: {exc}")
