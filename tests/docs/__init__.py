"""Tests that run the queries written in the docs against the live stack."""
