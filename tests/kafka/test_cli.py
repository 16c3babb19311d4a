"""``python -m otel.dlq`` as a real subprocess against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from otel.dlq import FAILURE_HEADERS, PermanentError
from tests.kafka.conftest import (
    BOOTSTRAP,
    Telemetry,
    Topics,
    new_group,
    read_topic,
    running,
    wait_for_records,
    wait_until,
    worker,
)

REPO = Path(__file__).resolve().parents[2]
ORIGINAL_HEADERS = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                    ("x-tenant", b"acme")]


async def cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m otel.dlq args`` with ``KAFKA_BOOTSTRAP``; return (code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "otel.dlq", *args, cwd=REPO,
        env={**os.environ, "KAFKA_BOOTSTRAP": BOOTSTRAP},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def dead_letter_three(topics: Topics, producer: AIOKafkaProducer,
                            telemetry: Telemetry) -> str:
    """Create a topic and send three records through a handler that rejects them all."""
    topic = await topics.create("cli")
    for n in range(3):
        await producer.send_and_wait(topic, json.dumps({"n": n}).encode(),
                                     key=f"k{n}".encode(), headers=ORIGINAL_HEADERS)

    async def reject(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        raise PermanentError(f"rejected {event['n']}")

    async with running(worker([topic], reject, telemetry)):
        await wait_for_records(topic + ".dlq", 3)
    return topic


async def test_list_prints_one_row_per_dlq_record_in_text_and_json(
    topics: Topics, producer: AIOKafkaProducer, telemetry: Telemetry
) -> None:
    """``list`` shows partition, offset, original position, error class and type per record."""
    topic = await dead_letter_three(topics, producer, telemetry)
    code, out, err = await cli("list", topic + ".dlq")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "PARTITION\tOFFSET\tORIGINAL\tERROR_CLASS\tERROR_TYPE\tATTEMPTS\tTIME"
    assert [line.split("\t")[:6] for line in lines[1:]] == [
        ["0", str(n), f"{topic}[0]@{n}", "otel.dlq.errors.PermanentError", "permanent_error",
         "1"] for n in range(3)]
    code, out, _ = await cli("list", topic + ".dlq", "--json", "--limit", "2")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(row["offset"], row["original_offset"], row["error_type"]) for row in rows] == [
        (0, "0", "permanent_error"), (1, "1", "permanent_error")]
    assert all(row["time"].endswith("Z") for row in rows)


async def test_show_prints_every_header_in_order_and_the_exact_value(
    topics: Topics, producer: AIOKafkaProducer, telemetry: Telemetry
) -> None:
    """``show --json`` returns key, all headers in record order and the value of one record."""
    topic = await dead_letter_three(topics, producer, telemetry)
    code, out, err = await cli("show", topic + ".dlq", "0", "1", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    stored = (await read_topic(topic + ".dlq"))[1]
    assert shown["key"] == "k1"
    assert shown["value"] == '{"n": 1}'
    assert shown["headers"] == [[k, v.decode() if v is not None else None]
                                for k, v in stored.headers]
    assert [k for k, _ in shown["headers"]] == [k for k, _ in ORIGINAL_HEADERS] + list(
        FAILURE_HEADERS)
    code, text, _ = await cli("show", topic + ".dlq", "0", "1")
    assert code == 0
    assert "  dlq.error.message: rejected 1" in text.splitlines()


async def test_replay_brings_each_record_back_exactly_once_and_counts_replays(
    topics: Topics, producer: AIOKafkaProducer, telemetry: Telemetry
) -> None:
    """Replays go to the source topic once per record, keep key/value/headers, count replays."""
    topic = await topics.create("replay")
    group = new_group()
    for n in range(3):
        await producer.send_and_wait(topic, json.dumps({"n": n}).encode(),
                                     key=f"k{n}".encode(), headers=ORIGINAL_HEADERS)
    broken = True
    handled: list[tuple[int, bytes | None]] = []

    async def handle(event: dict[str, Any], record: ConsumerRecord[bytes, bytes]) -> None:
        if broken:
            raise PermanentError("downstream rejects")
        handled.append((event["n"], dict(record.headers).get("dlq.replay.count")))

    async with running(worker([topic], handle, telemetry, group=group)):
        await wait_for_records(topic + ".dlq", 3)

        code, out, err = await cli("replay", topic + ".dlq", "--rate", "100")
        assert (code, err) == (0, "")
        assert out.splitlines()[-1].startswith("replayed 3 record(s)")
        dead = await wait_for_records(topic + ".dlq", 6)
        assert [dict(r.headers)["dlq.replay.count"] for r in dead[3:]] == [b"1"] * 3

        code, out, _ = await cli("replay", topic + ".dlq", "--rate", "100")
        assert code == 0
        assert out.splitlines()[-1].startswith("replayed 3 record(s)")
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 9,
                         "second replays dead-lettered")
        broken = False  # the fix is deployed: the third generation of replays is handled
        code, out, _ = await cli("replay", topic + ".dlq", "--rate", "100")
        assert code == 0
        assert out.splitlines()[-1].startswith("replayed 3 record(s)")
        await wait_until(lambda: topics.committed(group, topic), lambda offset: offset == 12,
                         "third replays handled")

        code, out, _ = await cli("replay", topic + ".dlq", "--rate", "100")
        assert (code, out.splitlines()[-1].split(" from ")[0]) == (0, "replayed 0 record(s)")

    source = await read_topic(topic)
    assert len(source) == 12
    assert [(r.key, r.value) for r in source[9:]] == [(r.key, r.value) for r in source[:3]]
    assert [list(r.headers) for r in source[9:]] == [
        [*ORIGINAL_HEADERS, ("dlq.replay.count", b"3")]] * 3
    assert sorted(handled) == [(n, b"3") for n in range(3)]
    assert len(await read_topic(topic + ".dlq")) == 9


async def test_replay_to_another_topic_is_paced_by_rate(
    topics: Topics, producer: AIOKafkaProducer, telemetry: Telemetry
) -> None:
    """``--to`` redirects the replay; ``--rate 5`` spaces three records by at least 0.4 s."""
    topic = await dead_letter_three(topics, producer, telemetry)
    target = await topics.create("replay-target", dlq=False)
    began = time.monotonic()
    code, _, err = await cli("replay", topic + ".dlq", "--to", target, "--rate", "5")
    elapsed = time.monotonic() - began
    assert (code, err) == (0, "")
    assert elapsed >= 0.4
    replayed = await read_topic(target)
    assert [(r.key, r.value) for r in replayed] == [
        (f"k{n}".encode(), json.dumps({"n": n}).encode()) for n in range(3)]


async def test_purge_deletes_records_before_an_offset_then_all(
    topics: Topics, producer: AIOKafkaProducer, telemetry: Telemetry
) -> None:
    """``purge --before 1`` drops offset 0; ``purge --all`` drops the rest."""
    topic = await dead_letter_three(topics, producer, telemetry)
    dlq = topic + ".dlq"
    code, out, err = await cli("purge", dlq, "--before", "1", "--partition", "0")
    assert (code, out, err) == (0, f"{dlq}[0] now starts at offset 1\n", "")
    assert [r.offset for r in await read_topic(dlq)] == [1, 2]
    code, out, _ = await cli("purge", dlq, "--all")
    assert (code, out) == (0, f"{dlq}[0] now starts at offset 3\n")
    assert await read_topic(dlq) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "{dlq}", "0", "-1"], 2, "must be >= 0"),
        (["purge", "{dlq}", "--before", "1"], 2, "--before needs --partition"),
        (["replay", "{dlq}", "--rate", "0"], 2, "must be > 0"),
        (["list", "no-such-topic.dlq"], 4, "does not exist"),
        (["show", "{dlq}", "0", "99"], 4, "has offsets 0..2, not 99"),
        (["show", "{dlq}", "5", "0"], 4, "has no partition 5"),
        (["--bootstrap-servers", "127.0.0.1:1", "list", "{dlq}"], 3, "cannot reach Kafka"),
    ],
)
async def test_bad_arguments_and_missing_things_exit_with_the_documented_code(
    topics: Topics, producer: AIOKafkaProducer, telemetry: Telemetry,
    args: list[str], code: int, message: str,
) -> None:
    """Bad arguments exit 2, unreachable broker 3, missing topic or record 4, with a message."""
    topic = await dead_letter_three(topics, producer, telemetry)
    got, out, err = await cli(*[arg.format(dlq=topic + ".dlq") for arg in args])
    assert (got, out) == (code, "")
    assert message in err
