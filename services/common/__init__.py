"""Plumbing shared by the three services: settings, telemetry setup, Kafka, PostgreSQL, HTTP."""
