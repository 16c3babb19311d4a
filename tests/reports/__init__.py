"""Tests of the reports package (the SLA report)."""
