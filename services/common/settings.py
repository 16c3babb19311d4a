"""Where the services find the stack: every address comes from one environment variable.

=============================  ==============================================  ==============
variable                       default                                         used by
=============================  ==============================================  ==============
``KAFKA_BOOTSTRAP_SERVERS``    ``127.0.0.1:9092``                              all three
``REDIS_URL``                  ``redis://127.0.0.1:6379/0``                    all three
``POSTGRES_DSN``               ``postgresql://postgres@127.0.0.1:5432/somaagent``  all three
``SLM_BASE_URL``               ``http://127.0.0.1:8100/v1``                    worker
``SLM_MODEL``                  ``smollm2-135m-instruct``                       worker
``SLM_MAX_TOKENS``             ``24``                                          worker
``SLM_TIMEOUT_SECONDS``        ``30``                                          worker
``TOOL_RESULT_TIMEOUT_SECONDS``  ``20``                                        worker
``SOMA_BIND_HOST``             ``127.0.0.1``                                   all three
``GATEWAY_PORT`` / ``WORKER_PORT`` / ``EXECUTOR_PORT``  ``8010`` / ``8011`` / ``8012``
``SOMA_FAULTS``                (none) JSON object of fault switches at startup  all three
=============================  ==============================================  ==============
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name}={raw!r} is not a number") from exc


@dataclass(frozen=True)
class Settings:
    """The services' addresses and limits (see the module docstring for the variables)."""

    kafka_bootstrap: str
    redis_url: str
    postgres_dsn: str
    slm_base_url: str
    slm_model: str
    slm_max_tokens: int
    slm_timeout: float
    tool_result_timeout: float
    bind_host: str
    gateway_port: int
    worker_port: int
    executor_port: int
    faults_json: str

    @classmethod
    def from_env(cls) -> Settings:
        """Read every setting from the environment, with the documented defaults."""
        return cls(
            kafka_bootstrap=_env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            redis_url=_env("REDIS_URL", "redis://127.0.0.1:6379/0"),
            postgres_dsn=_env("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/somaagent"),
            slm_base_url=_env("SLM_BASE_URL", "http://127.0.0.1:8100/v1").rstrip("/"),
            slm_model=_env("SLM_MODEL", "smollm2-135m-instruct"),
            slm_max_tokens=int(_env_float("SLM_MAX_TOKENS", 24)),
            slm_timeout=_env_float("SLM_TIMEOUT_SECONDS", 30),
            tool_result_timeout=_env_float("TOOL_RESULT_TIMEOUT_SECONDS", 20),
            bind_host=_env("SOMA_BIND_HOST", "127.0.0.1"),
            gateway_port=int(_env_float("GATEWAY_PORT", 8010)),
            worker_port=int(_env_float("WORKER_PORT", 8011)),
            executor_port=int(_env_float("EXECUTOR_PORT", 8012)),
            faults_json=_env("SOMA_FAULTS", ""),
        )
