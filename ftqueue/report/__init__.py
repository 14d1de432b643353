"""`ftqueue report`: the base model against its LoRA runs, from the results table (torch-free)."""

from __future__ import annotations

from ftqueue.report.build import Report, ReportRow, build_report
from ftqueue.report.options import ReportOptions
from ftqueue.report.query import Group, Stat, validation_curves

__all__ = [
    "Group",
    "Report",
    "ReportOptions",
    "ReportRow",
    "Stat",
    "build_report",
    "validation_curves",
]
