"""SLA report: ``python -m reports.sla --from -7d --to now --out DIR``.

Writes DIR/sla.html (tables and inline SVG plots, self-contained) and DIR/sla.json (every
figure with the PromQL and evaluation time it came from) for the period: each SLO's
attainment, error budget burned and left, the alerts that fired with their durations, and the
longest error traces per service with their Jaeger links. It reads only the live Prometheus
and Jaeger HTTP APIs. Formulas and figures: docs/sla-report.md.
"""

from __future__ import annotations

from reports._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
