"""The ``rank-nets`` section of ``report.html``: each candidate's accuracy when trained on the distilled set, on a
random real subset and on the full data, and how well each proxy's ranking agrees with the full data's."""

from __future__ import annotations

from html import escape

from latentdistill.reports.evaluation import table_html

SOURCES = (("distilled", "distilled"), ("random_real", "random real"), ("full", "full data"))


def ranking_html(ranking: dict) -> str:
    """Two tables from a ``rank_nets.json``: candidates, then one row per proxy (correlations, best, time)."""
    header = ["candidate"] + [f"{title} (%)" for _, title in SOURCES] + ["seconds distilled / random / full"]
    rows = []
    for row in ranking.get("candidates", []):
        cells = [str(row.get("name", ""))]
        cells += [f"{row[key]['mean']:.2f} ± {row[key]['std']:.2f}" if key in row else "" for key, _ in SOURCES]
        cells.append(" / ".join(f"{row[key]['seconds']:.1f}" for key, _ in SOURCES if key in row))
        rows.append(cells)
    proxies = []
    for key, title in SOURCES[:2]:
        entry = ranking.get(key, {})
        if entry:
            proxies.append([title, _number(entry.get("spearman")), _number(entry.get("kendall_tau_b")),
                            "yes" if entry.get("same_best") else "no", ", ".join(entry.get("best", [])),
                            "" if entry.get("time_saved") is None else f"{entry['time_saved']:.1f}x"])
    proxy_table = table_html(["proxy", "Spearman", "Kendall tau-b", "same best", "best", "time saved"], proxies)
    full = ranking.get("full", {})
    summary = (f"<p>{escape(str(len(rows)))} candidates ({escape(str(ranking.get('spec', '')))}); full data's best: "
               f"{escape(', '.join(full.get('best', [])))}</p>")
    return summary + proxy_table + table_html(header, rows)


def _number(value: object) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{value:.3f}"
