"""The stylesheet of oodlens' HTML reports (:mod:`oodlens.bench.html`)."""

#: the stylesheet: system fonts, compact tables with tabular figures, best values and warnings marked
CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --head:#f3f5f9; --accent:#2456a6; --best:#e3f2e5;
        --bestfg:#13612a; --warn:#fff4dc; --warnfg:#8a5a00; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:#fff; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
header.top { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0 0 4px; }
.subtitle { color: var(--muted); margin: 0; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p { margin: 8px 0; max-width: 92ch; }
ul { margin: 6px 0 10px 22px; padding: 0; max-width: 92ch; }
pre { background: var(--head); padding: 8px 12px; border-radius: 4px; overflow-x: auto; }
pre code { padding: 0; background: none; }
code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--head);
       padding: 1px 4px; border-radius: 3px; }
nav.toc { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px;
          margin: 12px 0 8px; font-size: 14px; }
nav.toc ol { margin: 4px 0 0 18px; padding: 0; columns: 2; column-gap: 32px; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: 8px 0 16px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; white-space: nowrap; }
thead th { background: var(--head); border-bottom: 2px solid #b9c1cf; text-align: right; font-weight: 600;
           vertical-align: bottom; white-space: normal; max-width: 9.5em; }
thead th:first-child, tbody th, thead th.text { text-align: left; }
thead th.group { text-align: center; border-bottom: 1px solid #b9c1cf; }
th.gs, td.gs { border-left: 1px solid var(--line); }
tbody th { font-weight: 500; }
td { text-align: right; }
td.text { text-align: left; white-space: normal; }
tbody tr:nth-child(even) { background: #fafbfd; }
tbody tr:hover { background: #eef3fb; }
td.best { background: var(--best); color: var(--bestfg); font-weight: 700; }
td.flag { background: var(--warn); color: var(--warnfg); }
tr.warn > th, tr.warn > td { background: var(--warn); }
tr.mean > th, tr.mean > td { border-top: 2px solid #b9c1cf; font-style: italic; }
.note { color: var(--muted); font-size: 13.5px; }
.callout { border-left: 4px solid #e0a100; background: var(--warn); color: #4a3700; padding: 8px 12px;
           margin: 10px 0; border-radius: 0 4px 4px 0; }
figure { margin: 12px 0 20px; }
figure img, figure svg { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.figrow figure img { width: 100%; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; max-width: 92ch; }
.figrow { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 14px 18px; }
.figrow figure { margin: 0; }
dl.settings { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; font-size: 14px; }
dl.settings dt { font-weight: 600; color: var(--muted); }
dl.settings dd { margin: 0; word-break: break-word; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line);
         padding-top: 8px; }
@media print { main { max-width: none; padding: 0; } nav.toc { display: none; } tbody tr:hover { background: none; } }
"""
