"""Cost reports from the usage ledger: SQL aggregation, table / CSV / JSON renderers, HTML page.

::

    from broker.metering import open_ledger
    from broker.reports import ReportFilters, report_rows, to_json, write_html_report

    ledger = open_ledger()
    rows = report_rows(ledger, ["tenant", "day"], ReportFilters(tenant="acme"))
    print(to_json(rows))

The HTML page needs the ``reports`` extra (plotly), imported only when a page is written.
"""

from broker.reports.query import DEFAULT_GROUP_BY, ReportFilters, parse_time, report_rows
from broker.reports.render import print_table, render_table, to_csv, to_json, totals

__all__ = [
    "DEFAULT_GROUP_BY",
    "ReportFilters",
    "chart_data",
    "parse_time",
    "print_table",
    "render_table",
    "report_rows",
    "to_csv",
    "to_json",
    "totals",
    "write_html_report",
]


def __getattr__(name: str) -> object:
    # the HTML module imports plotly lazily anyway; keep `import broker.reports` light
    if name in ("write_html_report", "chart_data"):
        from broker.reports import html

        return getattr(html, name)
    raise AttributeError(name)
