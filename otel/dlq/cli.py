"""``python -m otel.dlq``: list, show, replay and purge dead-letter records.

See :mod:`otel.dlq` for the manual; ``python -m otel.dlq --help`` for the arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.structs import ConsumerRecord

from otel.dlq import headers as h

EXIT_OK: Final = 0
EXIT_KAFKA_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_NOT_FOUND: Final = 4

DEFAULT_BOOTSTRAP: Final = "127.0.0.1:9092"


class CliError(Exception):
    """An error reported on stderr with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m otel.dlq``."""
    parser = argparse.ArgumentParser(
        prog="python -m otel.dlq",
        description="Inspect, replay and purge dead-letter topics (T.dlq).",
        epilog="exit codes: 0 ok, 1 Kafka error, 2 bad arguments, 3 broker unreachable, "
        "4 topic or record not found",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help="host:port[,host:port] (default: $KAFKA_BOOTSTRAP or %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=30.0,
        help="seconds to wait for the broker per operation (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ls = commands.add_parser("list", help="one line per DLQ record")
    ls.add_argument("topic", help="the dead-letter topic, e.g. conversation.events.dlq")
    ls.add_argument("--limit", type=_positive_int, help="print at most this many records")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")

    show = commands.add_parser("show", help="one record with every header and its value")
    show.add_argument("topic")
    show.add_argument("partition", type=_non_negative_int)
    show.add_argument("offset", type=_non_negative_int)
    show.add_argument("--json", action="store_true", help="print one JSON object")

    replay = commands.add_parser(
        "replay", help="produce DLQ records again (each once per --group), key and headers kept"
    )
    replay.add_argument("topic")
    replay.add_argument("--to", help="target topic (default: each record's dlq.original.topic)")
    replay.add_argument(
        "--rate", type=_positive_float, default=10.0, help="records per second (default: 10)"
    )
    replay.add_argument(
        "--group", help="consumer group that remembers what was replayed "
        "(default: otel-dlq-replay.<topic>)",
    )
    replay.add_argument("--limit", type=_positive_int, help="replay at most this many records")

    purge = commands.add_parser(
        "purge", help="delete DLQ records (Kafka DeleteRecords: everything before an offset)"
    )
    purge.add_argument("topic")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--before", type=_non_negative_int, metavar="OFFSET",
                       help="delete the records of --partition with offsets below OFFSET")
    which.add_argument("--all", action="store_true", help="delete every record present now")
    purge.add_argument("--partition", type=_non_negative_int, help="required with --before")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _iso_ms(epoch_ms: str | None) -> str:
    if epoch_ms is None or not epoch_ms.lstrip("-").isdigit():
        return "-"
    moment = datetime.fromtimestamp(int(epoch_ms) / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


def _summary(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    hdrs = record.headers
    return {
        "partition": record.partition,
        "offset": record.offset,
        "original_topic": h.header_text(hdrs, h.ORIGINAL_TOPIC),
        "original_partition": h.header_text(hdrs, h.ORIGINAL_PARTITION),
        "original_offset": h.header_text(hdrs, h.ORIGINAL_OFFSET),
        "error_class": h.header_text(hdrs, h.ERROR_CLASS),
        "error_type": h.header_text(hdrs, h.ERROR_TYPE),
        "attempts": h.header_text(hdrs, h.ATTEMPTS),
        "time": _iso_ms(h.header_text(hdrs, h.LAST_FAILURE)),
    }


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    (described,) = await admin.describe_topics([topic])
    if described["error_code"] == UnknownTopicOrPartitionError.errno:
        raise CliError(f"topic {topic!r} does not exist", EXIT_NOT_FOUND)
    if described["error_code"]:
        raise for_code(described["error_code"])(f"describing topic {topic!r}")
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


@asynccontextmanager
async def _clients(
    args: argparse.Namespace, group_id: str | None = None
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    """Yield a started admin client and a consumer without auto-commit; close both after."""
    timeout_ms = int(args.timeout * 1000)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=args.bootstrap_servers, request_timeout_ms=timeout_ms
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=timeout_ms,
    )
    try:
        await admin.start()
        await consumer.start()
        yield admin, consumer
    finally:
        await consumer.stop()
        await admin.close()


async def _read(
    consumer: AIOKafkaConsumer,
    start: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
    timeout: float,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield the records of each partition from ``start`` (inclusive) to ``end`` (exclusive)."""
    consumer.assign(list(end))
    for tp, offset in start.items():
        consumer.seek(tp, offset)
    remaining = {tp for tp in end if start[tp] < end[tp]}
    deadline = time.monotonic() + timeout
    while remaining:
        if time.monotonic() > deadline:
            raise CliError(f"timed out reading {sorted(map(str, remaining))}", EXIT_KAFKA_ERROR)
        batch = await consumer.getmany(*remaining, timeout_ms=500)
        for tp, records in batch.items():
            for record in records:
                if record.offset < end[tp]:
                    yield record
                    deadline = time.monotonic() + timeout
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)


async def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    """Print one line (or JSON object) per record of the DLQ topic."""
    async with _clients(args) as (admin, consumer):
        tps = await _partitions(admin, args.topic)
        start = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        if not args.json:
            print("PARTITION\tOFFSET\tORIGINAL\tERROR_CLASS\tERROR_TYPE\tATTEMPTS\tTIME", file=out)
        printed = 0
        async for record in _read(consumer, start, end, args.timeout):
            row = _summary(record)
            if args.json:
                print(json.dumps(row), file=out)
            else:
                original = (
                    f"{row['original_topic']}[{row['original_partition']}]"
                    f"@{row['original_offset']}"
                )
                print(
                    f"{row['partition']}\t{row['offset']}\t{original}\t{row['error_class']}\t"
                    f"{row['error_type']}\t{row['attempts']}\t{row['time']}",
                    file=out,
                )
            printed += 1
            if args.limit is not None and printed >= args.limit:
                break
    return EXIT_OK


async def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    """Print one record: position, key, every header in order, and the value."""
    async with _clients(args) as (admin, consumer):
        tp = TopicPartition(args.topic, args.partition)
        if tp not in await _partitions(admin, args.topic):
            raise CliError(f"{args.topic} has no partition {args.partition}", EXIT_NOT_FOUND)
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= args.offset < end:
            raise CliError(
                f"{args.topic}[{args.partition}] has offsets {first}..{end - 1}, "
                f"not {args.offset}", EXIT_NOT_FOUND,
            )
        found = None
        async for record in _read(consumer, {tp: args.offset}, {tp: args.offset + 1},
                                  args.timeout):
            found = record
        if found is None:
            raise CliError(
                f"no record at {args.topic}[{args.partition}]@{args.offset} (compacted or a "
                "transaction marker)", EXIT_NOT_FOUND,
            )
    document = {
        "topic": found.topic,
        "partition": found.partition,
        "offset": found.offset,
        "timestamp": found.timestamp,
        "key": _text(found.key),
        "headers": [[key, _text(value)] for key, value in found.headers],
        "value": _text(found.value),
    }
    if args.json:
        print(json.dumps(document, ensure_ascii=False), file=out)
        return EXIT_OK
    print(f"record   {found.topic}[{found.partition}]@{found.offset}", file=out)
    print(f"time     {_iso_ms(str(found.timestamp))}", file=out)
    print(f"key      {document['key']}", file=out)
    print("headers", file=out)
    for key, value in document["headers"]:
        shown = value if key != h.ERROR_STACKTRACE or value is None else (
            "\n    " + value.rstrip("\n").replace("\n", "\n    ")
        )
        print(f"  {key}: {shown}", file=out)
    print(f"value    {document['value']}", file=out)
    return EXIT_OK


async def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    """Produce the records not yet replayed by ``--group``, paced at ``--rate`` per second."""
    group = args.group or f"otel-dlq-replay.{args.topic}"
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=int(args.timeout * 1000),
    )
    async with _clients(args, group_id=group) as (admin, consumer):
        tps = await _partitions(admin, args.topic)
        end = await consumer.end_offsets(tps)
        beginning = await consumer.beginning_offsets(tps)
        start: dict[TopicPartition, int] = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            start[tp] = beginning[tp] if committed is None else max(committed, beginning[tp])
        replayed = 0
        try:
            await producer.start()
            began = time.monotonic()
            async for record in _read(consumer, start, end, args.timeout):
                target = args.to or h.header_text(record.headers, h.ORIGINAL_TOPIC)
                if not target:
                    raise CliError(
                        f"{record.topic}[{record.partition}]@{record.offset} has no "
                        f"{h.ORIGINAL_TOPIC} header; pass --to", EXIT_USAGE,
                    )
                await asyncio.sleep(max(0.0, began + replayed / args.rate - time.monotonic()))
                future = await producer.send(
                    target, value=record.value, key=record.key,
                    headers=h.replay_headers(record.headers),
                )
                await future
                source = TopicPartition(record.topic, record.partition)
                await consumer.commit({source: record.offset + 1})
                replayed += 1
                print(f"replayed {record.topic}[{record.partition}]@{record.offset} -> "
                      f"{target}", file=out)
                if args.limit is not None and replayed >= args.limit:
                    break
        finally:
            await producer.stop()
        print(f"replayed {replayed} record(s) from {args.topic} (group {group})", file=out)
    return EXIT_OK


async def cmd_purge(args: argparse.Namespace, out: TextIO) -> int:
    """Delete records with Kafka's DeleteRecords (moves each partition's log start offset)."""
    if args.before is not None and args.partition is None:
        raise CliError("--before needs --partition", EXIT_USAGE)
    async with _clients(args) as (admin, consumer):
        tps = await _partitions(admin, args.topic)
        end = await consumer.end_offsets(tps)
        if args.all:
            targets = dict(end)
        else:
            tp = TopicPartition(args.topic, args.partition)
            if tp not in end:
                raise CliError(f"{args.topic} has no partition {args.partition}", EXIT_NOT_FOUND)
            if args.before > end[tp]:
                raise CliError(
                    f"--before {args.before} is past the end of {args.topic}[{args.partition}] "
                    f"({end[tp]})", EXIT_USAGE,
                )
            targets = {tp: args.before}
        low = await admin.delete_records(
            {tp: RecordsToDelete(before_offset=offset) for tp, offset in targets.items()},
            timeout_ms=int(args.timeout * 1000),
        )
    for tp in sorted(low, key=lambda item: item.partition):
        print(f"{tp.topic}[{tp.partition}] now starts at offset {low[tp]}", file=out)
    return EXIT_OK


COMMANDS: Final = {"list": cmd_list, "show": cmd_show, "replay": cmd_replay, "purge": cmd_purge}


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    """Run the CLI; return its exit code (argparse itself exits with 2 on bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(COMMANDS[args.command](args, out))
    except CliError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_code
    except KafkaConnectionError as exc:
        print(f"error: cannot reach Kafka at {args.bootstrap_servers}: {exc}", file=err)
        return EXIT_UNREACHABLE
    except KafkaError as exc:
        print(f"error: Kafka: {exc!r}", file=err)
        return EXIT_KAFKA_ERROR
