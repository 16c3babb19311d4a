"""otel._compat: the verified version ranges of the lean modules and the check that uses them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from otel import _compat
from otel._compat import VERIFIED, Verified, lean_supported


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test sees uncached results, and leaves none behind."""
    _compat.reset()
    yield
    _compat.reset()


def _pretend_installed(monkeypatch: pytest.MonkeyPatch, **versions: str | None) -> None:
    """installed_version() answers ``versions`` (underscores for dashes), else the real one."""
    real = _compat.installed_version
    fake = {name.replace("_", "-"): version for name, version in versions.items()}
    monkeypatch.setattr(_compat, "installed_version",
                        lambda dist: fake[dist] if dist in fake else real(dist))


@pytest.mark.parametrize("module", ["fastapi", "redis", "aiokafka", "sdk", "otlp"])
def test_every_module_is_supported_with_the_pinned_versions(
    module: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With requirements.lock's versions installed, every lean module is supported, silently."""
    with caplog.at_level(logging.WARNING, logger="otel"):
        assert lean_supported(module) is True
    assert caplog.records == []


def test_each_range_runs_from_the_pinned_minor_to_the_next() -> None:
    """Every range is exactly one minor release wide, and contains the installed version."""
    for rows in VERIFIED.values():
        for row in rows:
            major, minor = (int(part) for part in row.lower.split("."))
            assert row.upper == f"{major}.{minor + 1}", row
            installed = _compat.installed_version(row.distribution)
            assert installed is None or row.contains(installed), (row, installed)


@pytest.mark.parametrize(("version", "inside"), [
    ("1.45.0", True), ("1.45.1", True), ("1.45.17", True), ("1.45.1+local", True),
    ("1.45.0rc1", True), ("1.44.9", False), ("1.46.0", False), ("1.46.0b1", False),
    ("2.0", False), ("not-a-version", False),
])
def test_range_membership_compares_release_numbers(version: str, inside: bool) -> None:
    """Patch releases, local builds and pre-releases of the minor are inside; others outside."""
    assert Verified("opentelemetry-sdk", "1.45", "1.46").contains(version) is inside


def test_beta_versions_of_the_contrib_line_are_inside() -> None:
    """The contrib's 0.66bN versions are in >=0.66,<0.67; 0.67b0 is not."""
    row = Verified("opentelemetry-util-http", "0.66", "0.67")
    assert (row.contains("0.66b1"), row.contains("0.66b9"), row.contains("0.67b0")) == (
        True, True, False)


def test_a_version_outside_the_range_disables_the_module_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An SDK of another minor disables sdk and otlp, each with one warning naming the
    distribution, its version and the range; the result is cached (no second warning)."""
    _pretend_installed(monkeypatch, opentelemetry_sdk="1.47.0")
    with caplog.at_level(logging.WARNING, logger="otel"):
        assert [lean_supported("sdk"), lean_supported("sdk"), lean_supported("otlp")] == [
            False, False, False]
        assert lean_supported("redis") is True
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "lean sdk module disabled: opentelemetry-sdk 1.47.0 is installed, the module was "
        "verified with opentelemetry-sdk>=1.45,<1.46; using the upstream implementation instead",
        "lean otlp module disabled: opentelemetry-sdk 1.47.0 is installed, the module was "
        "verified with opentelemetry-sdk>=1.45,<1.46; using the upstream implementation instead",
    ]
    assert {r.name for r in caplog.records} == {"otel"}


def test_a_missing_required_distribution_disables_the_module_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without redis-py there is nothing to instrument: unsupported, no warning."""
    _pretend_installed(monkeypatch, redis=None)
    with caplog.at_level(logging.WARNING, logger="otel"):
        assert lean_supported("redis") is False
    assert caplog.records == []


def test_a_missing_optional_distribution_keeps_the_module(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The contrib FastAPI instrumentation is optional for the lean FastAPI module."""
    _pretend_installed(monkeypatch, opentelemetry_instrumentation_fastapi=None)
    with caplog.at_level(logging.WARNING, logger="otel"):
        assert lean_supported("fastapi") is True
    assert caplog.records == []


def test_an_optional_distribution_out_of_range_still_disables_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An installed optional distribution must be in range too."""
    _pretend_installed(monkeypatch, opentelemetry_instrumentation_fastapi="0.70b0")
    assert lean_supported("fastapi") is False


def test_unknown_module_is_unsupported() -> None:
    """A name without a lean module (httpx, asyncpg) is unsupported, without raising."""
    assert (lean_supported("httpx"), lean_supported("asyncpg")) == (False, False)
