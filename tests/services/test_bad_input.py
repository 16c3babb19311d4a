"""Bad input on every path gets a clear 4xx JSON error or goes to the DLQ with its reason."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.services import kit

pytestmark = pytest.mark.usefixtures("services")


def _post(session: str, key: str, content: bytes, content_type: str = "application/json",
          ) -> httpx.Response:
    return httpx.post(
        f"{kit.GATEWAY}/v1/sessions/{session}/messages", content=content,
        headers=kit.auth(key) | {"Content-Type": content_type},
    )


@pytest.fixture(scope="module")
def account() -> tuple[str, str]:
    """A tenant's API key and one of its sessions."""
    _, key = kit.create_tenant()
    return key, kit.create_session(key)


def test_malformed_json_is_a_400_with_malformed_json(account: tuple[str, str]) -> None:
    """A body that is not JSON answers 400 ``malformed_json``."""
    key, session = account
    answer = _post(session, key, b'{"text": "unterminated')
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_json"


def test_missing_field_is_a_422_naming_the_field(account: tuple[str, str]) -> None:
    """A JSON body without ``text`` answers 422 ``invalid_request`` whose details name it."""
    key, session = account
    answer = _post(session, key, b"{}")
    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "invalid_request"
    assert ["text"] in [d["loc"] for d in body["details"]]


def test_wrong_types_and_unknown_fields_are_422(account: tuple[str, str]) -> None:
    """A non-string ``text``, an empty one, or an unknown field each answer 422."""
    key, session = account
    for body in ({"text": 42}, {"text": ""}, {"text": "hi", "admin": True}, ["text"]):
        answer = _post(session, key, json.dumps(body).encode())
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"] == "invalid_request"


def test_max_reply_tokens_outside_1_to_slm_max_tokens_is_a_422(account: tuple[str, str]) -> None:
    """``max_reply_tokens`` that is not an integer in 1..SLM_MAX_TOKENS answers 422 naming it."""
    key, session = account
    for cap in (0, -1, 10_000, "2", 2.5, True, None):
        answer = _post(session, key, json.dumps({"text": "hi", "max_reply_tokens": cap}).encode())
        if cap is None:  # null is the same as absent
            assert answer.status_code == 202, answer.text
            continue
        assert answer.status_code == 422, (cap, answer.text)
        body = answer.json()
        assert body["error"] == "invalid_request"
        assert ["max_reply_tokens"] in [d["loc"] for d in body["details"]], (cap, body)
    answer = _post(session, key, b'{"text": "hi", "max_reply_tokens": 1}')
    assert answer.status_code == 202, answer.text


def test_oversized_body_is_a_413(account: tuple[str, str]) -> None:
    """A body above 16 KiB answers 413 ``payload_too_large`` before it is parsed."""
    key, session = account
    answer = _post(session, key, json.dumps({"text": "x" * 20000}).encode())
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"


def test_text_longer_than_the_limit_is_a_422(account: tuple[str, str]) -> None:
    """A 4001-character text (body under 16 KiB) answers 422."""
    key, session = account
    answer = _post(session, key, json.dumps({"text": "y" * 4001}).encode())
    assert answer.status_code == 422


def test_non_json_content_type_is_a_415(account: tuple[str, str]) -> None:
    """A form-encoded body answers 415 ``unsupported_media_type``."""
    key, session = account
    answer = _post(session, key, b"text=hello", "application/x-www-form-urlencoded")
    assert answer.status_code == 415
    assert answer.json()["error"] == "unsupported_media_type"


def test_missing_and_invalid_api_keys_are_401(account: tuple[str, str]) -> None:
    """No key, an unknown key and a non-Bearer scheme each answer 401 with their code."""
    _, session = account
    url = f"{kit.GATEWAY}/v1/sessions/{session}/messages"
    missing = httpx.post(url, json={"text": "hi"})
    assert (missing.status_code, missing.json()["error"]) == (401, "missing_api_key")
    for header in ("Bearer soma_not-a-real-key", "Basic dXNlcjpwYXNz", "Bearer"):
        answer = httpx.post(url, json={"text": "hi"}, headers={"Authorization": header})
        assert (answer.status_code, answer.json()["error"]) == (401, "invalid_api_key"), header


def test_unknown_session_is_a_404(account: tuple[str, str]) -> None:
    """A well-formed but unknown session id, and a malformed one, answer 404."""
    key, _ = account
    for session in (str(uuid.uuid4()), "not-a-uuid"):
        answer = _post(session, key, b'{"text": "hi"}')
        assert (answer.status_code, answer.json()["error"]) == (404, "session_not_found")
        listed = httpx.get(f"{kit.GATEWAY}/v1/sessions/{session}/messages",
                           headers=kit.auth(key))
        assert listed.status_code == 404


def test_another_tenants_session_is_a_404_on_every_route(account: tuple[str, str]) -> None:
    """Tenant B cannot post to, read, or stream tenant A's session: each is 404."""
    _, session_a = account
    _, key_b = kit.create_tenant()
    assert _post(session_a, key_b, b'{"text": "hi"}').status_code == 404
    listed = httpx.get(f"{kit.GATEWAY}/v1/sessions/{session_a}/messages",
                       headers=kit.auth(key_b))
    assert (listed.status_code, listed.json()["error"]) == (404, "session_not_found")


async def test_websocket_refuses_bad_keys_and_foreign_sessions(account: tuple[str, str]) -> None:
    """The stream answers 401 without a valid key and 404 for another tenant's session."""
    key_a, session_a = account
    _, key_b = kit.create_tenant()
    url = f"ws://127.0.0.1:8010/v1/sessions/{session_a}/stream"
    for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                            (kit.auth(key_b), 404)):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == status
    async with websockets.connect(url, additional_headers=kit.auth(key_a)):
        pass


def test_policy_denies_suspended_tenants_and_unlisted_personas() -> None:
    """A suspended tenant, and a persona outside the allowlist, are refused with 403."""
    _, key = kit.create_tenant(allowed_personas=["default"])
    denied = httpx.post(f"{kit.GATEWAY}/v1/sessions", json={"persona_id": "pirate"},
                        headers=kit.auth(key))
    assert (denied.status_code, denied.json()["error"]) == (403, "policy_denied")
    _, suspended = kit.create_tenant(status="suspended")
    answer = httpx.post(f"{kit.GATEWAY}/v1/sessions", headers=kit.auth(suspended))
    assert (answer.status_code, answer.json()["error"]) == (403, "policy_denied")


def test_admin_endpoints_reject_invalid_switches() -> None:
    """Unknown fault switches and out-of-range values answer 422 and change nothing."""
    before = httpx.get(f"{kit.GATEWAY}/admin/faults").json()
    for body in ({"no_such_switch": 1}, {"gateway_5xx_ratio": 2}):
        answer = httpx.post(f"{kit.GATEWAY}/admin/faults", json=body)
        assert answer.status_code == 422, answer.text
    assert httpx.get(f"{kit.GATEWAY}/admin/faults").json() == before


@pytest.mark.parametrize(
    ("topic", "value", "error_type"),
    [
        ("conversation.events", b"\xff\xfe not json", "undecodable_event"),
        ("conversation.events", b'{"session_id": 7}', "invalid_event"),
        ("conversation.events",
         json.dumps({"message_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()),
                     "tenant_id": "t", "persona_id": "default", "text": "hi",
                     "max_reply_tokens": 0}).encode(), "invalid_event"),
        ("tool.requests", b"[1, 2, 3]", "invalid_event"),
        ("tool.requests",
         b'{"correlation_id": "c", "tenant_id": "t", "tool_name": "rm -rf"}', "invalid_event"),
    ],
)
async def test_malformed_kafka_events_go_to_the_dlq_with_their_reason(
    topic: str, value: bytes, error_type: str
) -> None:
    """A malformed record lands in ``T.dlq`` unchanged, with its error type and reason."""
    key = f"bad-{uuid.uuid4().hex}".encode()
    await kit.produce(topic, value, key)
    record = await kit.find_record(f"{topic}.dlq", key)
    headers = kit.headers_of(record)
    assert record.value == value
    assert headers["dlq.original.topic"] == topic
    assert headers["dlq.error.type"] == error_type
    assert headers["dlq.error.message"]
    for port in (8010, 8011, 8012):
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200


@pytest.mark.parametrize("header", ["traceparent", "baggage"])
async def test_a_header_that_is_not_utf8_never_stops_a_consumer(header: str) -> None:
    """A record whose trace context header is not UTF-8 (the contrib aiokafka getter raised
    out of getone on it) is dead-lettered like any malformed record, and the worker goes on to
    the next one."""
    key = f"bad-header-{uuid.uuid4().hex}".encode()
    await kit.produce("conversation.events", b'{"session_id": 7}', key,
                      headers=[(header, b"\xff\xfe")])
    after = f"after-{uuid.uuid4().hex}".encode()
    await kit.produce("conversation.events", b"[]", after)
    record = await kit.find_record("conversation.events.dlq", key)
    assert kit.headers_of(record)["dlq.error.type"] == "invalid_event"
    assert record.headers[0] == (header, b"\xff\xfe")  # kept as it came
    assert kit.headers_of(await kit.find_record("conversation.events.dlq", after))[
        "dlq.error.type"] == "invalid_event"
    assert httpx.get("http://127.0.0.1:8011/readyz").status_code == 200
