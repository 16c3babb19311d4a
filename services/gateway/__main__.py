"""Entry point: ``python -m services.gateway`` (see :mod:`services.gateway`)."""

from __future__ import annotations

import asyncio

from services.common.settings import Settings
from services.common.telemetry import setup


def main() -> None:
    """Configure telemetry, then serve the gateway until stopped."""
    telemetry = setup("gateway")
    from services.common.http import serve
    from services.gateway.app import create_app

    settings = Settings.from_env()
    try:
        asyncio.run(serve(create_app(settings), settings.bind_host, settings.gateway_port))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
