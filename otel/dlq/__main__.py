"""Entry point of ``python -m otel.dlq``."""

import sys

from otel.dlq.cli import main

sys.exit(main())
