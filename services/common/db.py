"""PostgreSQL: the ``somaagent`` database and its schema, created idempotently at startup.

Tables (all services share them; each service runs :func:`connect`, which creates what is
missing under an advisory lock, so concurrent starts do not race):

* ``tenants(id, status, token_budget, persona_token_budget, allowed_tools, allowed_personas,
  rate_limit_per_minute, created_at)``: a tenant and its policy.
* ``api_keys(key_hash, tenant_id, created_at)``: sha256 hex of each API key; keys themselves
  are never stored.
* ``sessions(id, tenant_id, persona_id, created_at)``.
* ``messages(id, session_id, tenant_id, role, content, status, intent, trace_id, reply_to,
  created_at)``: ``role`` is ``user`` (written by the gateway, status ``accepted``, then
  ``answered``/``over_budget``/``failed`` by the worker) or ``assistant`` (the worker's reply).
"""

from __future__ import annotations

import contextlib
import urllib.parse
from typing import Final

import asyncpg

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tenants (
    id text PRIMARY KEY,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    token_budget bigint NOT NULL CHECK (token_budget >= 0),
    persona_token_budget bigint NOT NULL CHECK (persona_token_budget >= 0),
    allowed_tools text[] NOT NULL,
    allowed_personas text[] NOT NULL,
    rate_limit_per_minute integer NOT NULL CHECK (rate_limit_per_minute > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS sessions (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    persona_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS messages (
    id uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    role text NOT NULL CHECK (role IN ('user', 'assistant')),
    content text NOT NULL,
    status text NOT NULL,
    intent text,
    trace_id text NOT NULL,
    reply_to uuid,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS messages_session_created ON messages (session_id, created_at);
"""

_SCHEMA_LOCK: Final = 0x50A4A6E7  # advisory lock id: one schema migration at a time


async def _ensure_database(dsn: str) -> None:
    parts = urllib.parse.urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin_dsn = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        # a concurrent start may win the race: either error means the database now exists
        with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def connect(dsn: str) -> asyncpg.Pool:
    """Create the database and schema if missing; return a connection pool."""
    await _ensure_database(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10, timeout=10)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(SCHEMA)
    return pool


async def postgres_reachable(pool: asyncpg.Pool, timeout: float = 3.0) -> bool:
    """Tell whether ``SELECT 1`` succeeds within ``timeout`` seconds."""
    try:
        return bool(await pool.fetchval("SELECT 1", timeout=timeout) == 1)
    except Exception:
        return False
