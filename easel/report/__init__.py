"""The benchmark report: summary.json, report.md and a self-contained report.html per run."""

from easel.report.floor import FLOOR_FORMULA, FloorRow, floor_rows, floor_seconds
from easel.report.summary import build_summary, disclosures
from easel.report.write import ReportFiles, headline_text, load_run_config, write_report

__all__ = [
    "FLOOR_FORMULA",
    "FloorRow",
    "ReportFiles",
    "build_summary",
    "disclosures",
    "floor_rows",
    "floor_seconds",
    "headline_text",
    "load_run_config",
    "write_report",
]
