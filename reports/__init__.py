"""Reports built from the live observability APIs: the SLA report (``python -m reports.sla``)."""

from __future__ import annotations

from reports._build import build_report
from reports._cli import main
from reports._html import render
from reports._http import SourceError
from reports._jaeger import Jaeger
from reports._model import Figure, Report
from reports._period import Period, PeriodError, parse_period
from reports._prometheus import Prometheus

__all__ = [
    "Figure",
    "Jaeger",
    "Period",
    "PeriodError",
    "Prometheus",
    "Report",
    "SourceError",
    "build_report",
    "main",
    "parse_period",
    "render",
]
