"""The SLM call: OpenAI-compatible ``POST {SLM_BASE_URL}/chat/completions`` in a ``chat {model}``
CLIENT span.

Span attributes (gen_ai semantic conventions): ``gen_ai.operation.name=chat``,
``gen_ai.provider.name=openai`` (the wire API; the server is llama-cpp-python),
``gen_ai.request.model``, ``gen_ai.request.max_tokens``, ``gen_ai.request.temperature``,
``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``,
``gen_ai.usage.input_tokens``/``output_tokens`` (the server's ``usage``), ``server.address``,
``server.port``. The httpx instrumentation is suppressed inside, so the call is one CLIENT span,
not two.

Failures: timeout -> ``error.type=slm_timeout``; connection error -> ``slm_unavailable``; HTTP
429/5xx -> ``slm_http_<code>`` (all three :class:`otel.dlq.RetryableError`); another HTTP
status or an answer without ``choices``/``usage`` -> ``slm_bad_response``
(:class:`otel.dlq.PermanentError`).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.util.types import AttributeValue

import otel
from otel.dlq import PermanentError, RetryableError

TEMPERATURE: Final = 0.2
SYSTEM_PROMPT: Final = "You are SomaAgent, a helpful assistant. Answer in one short sentence."


@dataclass(frozen=True)
class ChatResult:
    """The assistant's text and the server's token usage."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int


class SlmClient:
    """Chat completions against one OpenAI-compatible server."""

    def __init__(self, base_url: str, model: str, max_tokens: int, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout)
        url = urllib.parse.urlsplit(self.base_url)
        self._server = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def reachable(self) -> bool:
        """Tell whether ``GET {base}/models`` answers 200 within 3 s."""
        try:
            with suppress_http_instrumentation():
                response = await self._http.get(f"{self.base_url}/models", timeout=3)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def chat(
        self, user_text: str, *, delay: float = 0.0, max_tokens: int | None = None
    ) -> ChatResult:
        """Ask the model to answer ``user_text``; ``delay`` seconds of injected latency first.

        ``max_tokens`` lowers the reply's token cap for this call (never above the client's).
        """
        cap = self.max_tokens if max_tokens is None else max(1, min(max_tokens, self.max_tokens))
        attributes: dict[str, AttributeValue] = {
            GEN_AI_PROVIDER_NAME: "openai",
            GEN_AI_REQUEST_MAX_TOKENS: cap,
            GEN_AI_REQUEST_TEMPERATURE: TEMPERATURE,
            SERVER_ADDRESS: self._server[0],
            SERVER_PORT: self._server[1],
        }
        with otel.slm_chat(self.model, attributes=attributes) as span:
            if delay > 0:
                span.add_event("fault.slm_delay", {"seconds": delay})
                await asyncio.sleep(delay)
            body = {
                "model": self.model,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_text},
                ],
                "max_tokens": cap,
                "temperature": TEMPERATURE,
            }
            try:
                with suppress_http_instrumentation():
                    response = await self._http.post(f"{self.base_url}/chat/completions", json=body)
            except httpx.TimeoutException as exc:
                otel.record_failure(span, "slm_timeout", exc)
                raise RetryableError(f"SLM timed out after {self.timeout}s",
                                     error_type="slm_timeout") from exc
            except httpx.HTTPError as exc:
                otel.record_failure(span, "slm_unavailable", exc)
                raise RetryableError(
                    f"SLM unreachable: {exc}", error_type="slm_unavailable"
                ) from exc
            if response.status_code != 200:
                kind = f"slm_http_{response.status_code}"
                error: Exception
                if response.status_code == 429 or response.status_code >= 500:
                    error = RetryableError(f"SLM answered {response.status_code}", error_type=kind)
                else:
                    kind = "slm_bad_response"
                    error = PermanentError(
                        f"SLM answered {response.status_code}: {response.text[:200]}",
                        error_type=kind,
                    )
                otel.record_failure(span, kind, error)
                raise error
            try:
                result, response_id, finish = _parse(response.json(), self.model)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                otel.record_failure(span, "slm_bad_response", exc)
                raise PermanentError(f"unusable SLM answer: {exc}",
                                     error_type="slm_bad_response") from exc
            otel.record_chat_response(
                span, response_model=result.model, input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
            )
            if response_id:
                span.set_attribute(GEN_AI_RESPONSE_ID, response_id)
            if finish:
                span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, [finish])
            return result


def _parse(data: Any, default_model: str) -> tuple[ChatResult, str, str]:
    """Read the text, model, usage, id and finish reason of a chat completion answer."""
    choice = data["choices"][0]
    text = str(choice["message"]["content"] or "").strip()
    usage = data["usage"]
    input_tokens, output_tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("negative token usage")
    model = str(data.get("model") or default_model)
    result = ChatResult(text, model, input_tokens, output_tokens)
    return result, str(data.get("id") or ""), str(choice.get("finish_reason") or "")
