"""The HTML study report: one self-contained page from a comparison table.

``build`` assembles the page (the comparison, plots, configs, commands, versions),
``table`` the comparison's HTML table, ``health`` each group's gradient health, ``page``
the HTML pieces and the stylesheet.
"""

from gradlab.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
