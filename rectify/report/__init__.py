"""Sweep reports: gather evaluation results, one table (markdown + CSV) and the toxicity/fluency trade-off plot."""

from rectify.report.gather import ReportError, gather, swept_keys
from rectify.report.plot import tradeoff_plot
from rectify.report.runner import build_rows, write_report
from rectify.report.table import add_baseline_deltas, format_markdown, headline_columns

__all__ = ["ReportError", "add_baseline_deltas", "build_rows", "format_markdown", "gather", "headline_columns",
           "swept_keys", "tradeoff_plot", "write_report"]
