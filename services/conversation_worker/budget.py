"""Per-tenant and per-persona token budgets in Redis, per UTC day.

Keys: ``budget:{tenant}:{day}`` and ``budget:{tenant}:{persona}:{day}`` (``day`` = YYYYMMDD,
expiring two days later). Limits come from the tenant's row (``token_budget``,
``persona_token_budget``).

* :meth:`Budgets.check` (one Lua script, atomic): a message is refused when the tenant or the
  persona has *already* used its whole budget for the day.
* :meth:`Budgets.consume` (one Lua script, atomic): adds the SLM call's actual tokens
  (prompt + completion) to both counters.

So the limit is soft by at most one message: the message that crosses it is answered and
charged in full, the next one is refused. (The real token count is only known after the call;
refusing mid-answer would waste the tokens already spent.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

_CHECK: Final = """
local tenant_used = tonumber(redis.call('GET', KEYS[1]) or '0')
local persona_used = tonumber(redis.call('GET', KEYS[2]) or '0')
if tenant_used >= tonumber(ARGV[1]) then return {0, tenant_used, persona_used} end
if persona_used >= tonumber(ARGV[2]) then return {0, tenant_used, persona_used} end
return {1, tenant_used, persona_used}
"""

_CONSUME: Final = """
local t = redis.call('INCRBY', KEYS[1], ARGV[1])
local p = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {t, p}
"""

_TTL_SECONDS: Final = 2 * 86400


@dataclass(frozen=True)
class BudgetState:
    """Tokens used today by the tenant and the persona, and whether a message may proceed."""

    allowed: bool
    tenant_used: int
    persona_used: int


class Budgets:
    """Atomic budget checks and charges (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._check = redis.register_script(_CHECK)
        self._consume = redis.register_script(_CONSUME)

    @staticmethod
    def keys(tenant: str, persona: str) -> list[str]:
        """The tenant's and the persona's counter keys for the current UTC day."""
        day = time.strftime("%Y%m%d", time.gmtime())
        return [f"budget:{tenant}:{day}", f"budget:{tenant}:{persona}:{day}"]

    async def check(
        self, tenant: str, persona: str, tenant_limit: int, persona_limit: int
    ) -> BudgetState:
        """Tell whether the tenant and the persona still have budget today."""
        allowed, tenant_used, persona_used = await self._check(
            keys=self.keys(tenant, persona), args=[tenant_limit, persona_limit]
        )
        return BudgetState(bool(allowed), int(tenant_used), int(persona_used))

    async def consume(self, tenant: str, persona: str, tokens: int) -> tuple[int, int]:
        """Charge ``tokens`` to both counters; return their new values."""
        tenant_used, persona_used = await self._consume(
            keys=self.keys(tenant, persona), args=[tokens, _TTL_SECONDS]
        )
        return int(tenant_used), int(persona_used)
