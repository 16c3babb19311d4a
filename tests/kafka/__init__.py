"""Tests of otel.kafka and otel.dlq on the real Kafka broker."""
