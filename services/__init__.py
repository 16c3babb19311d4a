"""SomaAgent's reference services: gateway -> conversation worker -> tool executor.

Three small but real services that talk over Kafka and keep state in Redis and PostgreSQL, so
that every signal of the observability spec has a real source. Manuals:
:mod:`services.gateway`, :mod:`services.conversation_worker`, :mod:`services.tool_executor`,
:mod:`services.faults` (fault switches), :mod:`services.demo` (the demo workload), and
``docs/services.md`` (how to run them).
"""
