#!/usr/bin/env python3
"""Render alertmanager.yml with PagerDuty and Opsgenie receivers taken from environment secrets.

Alertmanager 0.25 does not expand environment variables in its configuration, so the shipped
alertmanager.yml is for local use (webhook sink only) and this step adds the paging integrations:

    PAGERDUTY_ROUTING_KEY  set: receiver "page" gets a PagerDuty (Events API v2) integration.
    OPSGENIE_API_KEY       set: receiver "page" gets Opsgenie priority P1, "ticket" priority P3.

An unset or empty variable leaves its integration off. Each secret is written to its own file,
readable by its owner only, next to the rendered configuration, which refers to it through
routing_key_file / api_key_file and so holds no secret itself.

Usage: render_alertmanager.py OUTPUT_DIR
writes OUTPUT_DIR/alertmanager.yml and OUTPUT_DIR/secrets/; run amtool check-config on the result.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SOURCE = Path(__file__).with_name("alertmanager.yml")


def _write_secret(secrets_dir: Path, name: str, value: str) -> Path:
    """Write one secret to a new owner-only file and return its absolute path."""
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = secrets_dir / name
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return path.resolve()


def _receiver(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the receiver called name from config."""
    receivers: list[dict[str, Any]] = config["receivers"]
    for receiver in receivers:
        if receiver["name"] == name:
            return receiver
    raise KeyError(f"alertmanager.yml has no receiver {name!r}")


def render(config: dict[str, Any], env: Mapping[str, str], secrets_dir: Path) -> dict[str, Any]:
    """Add the integrations whose secrets are set in env to config (modified and returned)."""
    page = _receiver(config, "page")
    ticket = _receiver(config, "ticket")
    if routing_key := env.get("PAGERDUTY_ROUTING_KEY", "").strip():
        key_file = _write_secret(secrets_dir, "pagerduty_routing_key", routing_key)
        page["pagerduty_configs"] = [{"routing_key_file": str(key_file), "send_resolved": True}]
    if api_key := env.get("OPSGENIE_API_KEY", "").strip():
        key_file = _write_secret(secrets_dir, "opsgenie_api_key", api_key)
        for receiver, priority in ((page, "P1"), (ticket, "P3")):
            receiver["opsgenie_configs"] = [
                {"api_key_file": str(key_file), "priority": priority, "send_resolved": True}
            ]
    return config


def main(argv: list[str]) -> int:
    """Render SOURCE into the output directory given as the only argument."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(SOURCE.read_text())
    rendered = render(config, os.environ, out_dir / "secrets")
    header = f"# Rendered from {SOURCE.name} by {Path(__file__).name}; do not edit.\n"
    (out_dir / "alertmanager.yml").write_text(header + yaml.safe_dump(rendered, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
