"""``python -m reports``: the SLA report (the same command as ``python -m reports.sla``)."""

from __future__ import annotations

from reports._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
