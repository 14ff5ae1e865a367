"""The report page's CSS, inline in the page: system fonts, one column of cards, pixel-exact grids."""

CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --card: #ffffff; --page: #f3f4f6; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--ink);
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", "Liberation Sans", sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 20px 48px; }
header, section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
                  padding: 16px 20px; margin-bottom: 16px; }
h1 { font-size: 20px; margin: 0 0 2px; overflow-wrap: anywhere; }
h2 { font-size: 16px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
p { margin: 6px 0; }
.muted { color: var(--muted); overflow-wrap: anywhere; }
.absent { color: var(--muted); font-style: italic; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 8px 20px;
         margin: 12px 0 4px; }
.facts div { min-width: 0; }
.facts div.wide { grid-column: span 2; }
.facts dt { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.gallery { display: flex; flex-wrap: wrap; gap: 20px 28px; align-items: flex-start; }
figure.grid { margin: 0; max-width: 100%; }
figure.grid figcaption { font-weight: 600; margin-bottom: 6px; }
.grid-body { display: flex; align-items: stretch; max-width: 100%; }
.grid-body img { display: block; align-self: flex-start; max-width: 100%; height: auto; min-width: 0;
                 image-rendering: pixelated; border: 1px solid var(--line); }
ol.row-labels { list-style: none; margin: 0 8px 0 0; padding: 1px 0; display: flex; flex-direction: column; }
ol.row-labels li { flex: 1 1 0; min-height: 0; display: flex; align-items: center; justify-content: flex-end;
                   font-size: 12px; white-space: nowrap; color: var(--ink); }
.chart-box { overflow-x: auto; max-width: 100%; }
.side-by-side { display: flex; flex-wrap: wrap; gap: 8px 40px; align-items: flex-start; }
/* the chart keeps its size, the legend wraps under it, the table fits beside */
.side-by-side .chart-box { width: min-content; }
.side-by-side svg.chart { max-width: none; }
svg.chart { display: block; max-width: 100%; height: auto; font-size: 12px; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axis { stroke: var(--muted); stroke-width: 1; }
svg .tick { fill: var(--muted); }
svg .label { fill: var(--ink); }
svg .value { fill: var(--ink); font-size: 11px; }
svg .error { stroke: var(--ink); stroke-width: 1.3; }
svg polyline { fill: none; stroke-linejoin: round; }
svg .loss { stroke: var(--accent); stroke-width: 1.6; }
svg .loss.raw { stroke: #93c5fd; stroke-width: 1; }
svg .loss.trend { stroke: var(--accent); stroke-width: 2; }
svg .loss-dot { fill: var(--accent); }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 0; margin: 6px 0 10px; }
ul.legend li { white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px;
          vertical-align: -1px; }
table { border-collapse: collapse; margin: 10px 0; }
th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td { font-variant-numeric: tabular-nums; }
table.compact td, table.compact th { padding: 2px 14px 2px 0; }
ul.columns { columns: 4 160px; padding-left: 18px; }
details summary { cursor: pointer; color: var(--muted); margin-top: 8px; }
pre { background: #f9fafb; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; margin: 0;
      font: 12px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; overflow-x: auto;
      columns: 2 400px; column-gap: 24px; }
"""
