"""Exit 0 when the Kafka node at argv[1] is a live broker of its cluster, else 1 with the reason.

Usage: ``kafka_ready.py HOST:PORT [BROKERS]``. The node must answer a metadata request and list
itself (a broker advertising ``HOST:PORT``) among the cluster's brokers: in KRaft the metadata
holds only the registered, unfenced brokers, so a node of the three-node cluster is not ready
before the controller quorum has admitted it. With ``BROKERS`` the cluster must also have at
least that many live brokers. The single node of the default profile lists itself as soon as
it serves.
"""

import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def _main(address: str, brokers: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=5000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    live = sorted(f"{b['host']}:{b['port']}" for b in cluster["brokers"])
    if address not in live:
        raise RuntimeError(f"{address} is not among the live brokers {live}")
    if len(live) < brokers:
        raise RuntimeError(f"{len(live)} live broker(s) {live}, expected {brokers}")


if __name__ == "__main__":
    try:
        asyncio.run(_main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1))
    except Exception as exc:
        sys.exit(f"kafka not ready: {type(exc).__name__}: {exc}")
