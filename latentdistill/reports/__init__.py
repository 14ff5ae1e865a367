"""Reports on a finished run: one self-contained ``report.html`` per run or evaluation folder, readable
offline and mailable as one file (images and charts inline, no script, nothing fetched)."""

from latentdistill.reports.html import write_html_report

__all__ = ["write_html_report"]
