"""The report's HTML page: static, self-contained, no JavaScript and no external resources.

Example::

    panel = Panel("ntk_trace", "Kernel", "NTK trace", "tr Θ on the measurement batch.", [("ntk_trace.png", "")])
    Path("report/index.html").write_text(render_page(runs, run_colors(runs), [panel], notes=[]))
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Sequence
from dataclasses import dataclass

from lightning_spectral.report.reader import RunData

SECTIONS = {
    "Curvature": "The loss Hessian, from HessianEigenMonitor.",
    "Kernel": "The empirical neural tangent kernel, from NTKTraceMonitor.",
    "Weights": "The singular values of every weight matrix, from WeightSpectrumMonitor.",
    "Checkpoints": "Singular-vector agreement with the final checkpoint, from the run's saved checkpoints.",
}

STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1060px; margin: 0 auto; padding: 28px 36px 60px; background: #fff; min-height: 100vh; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 40px 0 4px; padding-bottom: 4px; border-bottom: 2px solid #e6e8eb; }
h2 + p.lead { margin-top: 4px; color: #57606a; }
p.meta { color: #57606a; margin: 0 0 18px; }
table.runs { border-collapse: collapse; width: 100%; font-size: 0.93em; }
table.runs th, table.runs td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #e6e8eb; }
table.runs th { background: #f6f8fa; font-weight: 600; }
table.runs td.path { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
                     word-break: break-all; color: #57606a; }
.swatch { display: inline-block; width: 13px; height: 13px; border-radius: 3px; margin-right: 7px;
          vertical-align: -1px; }
nav ol { columns: 2; column-gap: 32px; padding-left: 20px; margin: 8px 0 0; }
nav a, h3 a { color: #0969da; text-decoration: none; }
figure { margin: 22px 0 30px; }
figure img { display: block; width: 100%; height: auto; border: 1px solid #eaecef; border-radius: 4px; }
figcaption { font-size: 0.92em; color: #3d444d; margin-top: 8px; }
figcaption b { color: #1f2328; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
.gallery figure { margin: 0; }
.gallery figcaption { margin-top: 4px; }
ul.notes { color: #57606a; font-size: 0.92em; }
"""


@dataclass(frozen=True)
class Panel:
    """One entry of the page: a titled, captioned figure of one or more ``(file name, label)`` images."""

    anchor: str
    section: str
    title: str
    caption: str
    images: Sequence[tuple[str, str]]
    size: tuple[int, int] | None = None


def render_page(
    runs: Sequence[RunData], colors: dict[str, str], panels: Sequence[Panel], notes: Sequence[str]
) -> str:
    """The HTML text of the report: runs table, contents, one section per :data:`SECTIONS` entry, notes."""
    esc = html.escape
    names = ", ".join(run.name for run in runs)
    rows = "\n".join(
        f'<tr><td><span class="swatch" style="background:{colors[run.name]}"></span>{esc(run.name)}</td>'
        f'<td class="path">{esc(str(run.path))}</td><td>{run.steps[0]} – {run.steps[1]}</td>'
        f"<td>{len(run.scalars)}</td><td>{len(run.event_files)}</td></tr>"
        for run in runs
    )
    ordered = sorted(panels, key=lambda p: list(SECTIONS).index(p.section))
    contents = "\n".join(f'<li><a href="#{esc(p.anchor)}">{esc(p.title)}</a></li>' for p in ordered)
    body = []
    for section, lead in SECTIONS.items():
        members = [p for p in ordered if p.section == section]
        if members:
            body.append(
                f'<section id="{section.lower()}">\n<h2>{esc(section)}</h2>\n<p class="lead">{esc(lead)}</p>'
            )
            body.extend(_panel(p) for p in members)
            body.append("</section>")
    if notes:
        body.append('<h2 id="not-shown">Not shown</h2>\n<ul class="notes">')
        body.extend(f"<li>{esc(note)}</li>" for note in notes)
        body.append("</ul>")
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spectral report: {esc(names)}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>Spectral report</h1>
<p class="meta">{len(runs)} run{"s" if len(runs) != 1 else ""}: {esc(names)} · made by
<code>lightning-spectral report</code> on {generated}</p>
<table class="runs">
<thead><tr><th>run</th><th>folder</th><th>steps</th><th>spectral metrics</th><th>event files</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<nav><h2>Contents</h2>
<ol>
{contents}
</ol></nav>
{chr(10).join(body)}
</main>
</body>
</html>
"""


def _panel(panel: Panel) -> str:
    esc = html.escape
    caption = f"<b>{esc(panel.title)}.</b> {esc(panel.caption)}"
    if len(panel.images) == 1 and not panel.images[0][1]:
        src = panel.images[0][0]
        size = f' width="{panel.size[0]}" height="{panel.size[1]}"' if panel.size else ""
        return (
            f'<figure id="{esc(panel.anchor)}">\n<img src="{esc(src)}" alt="{esc(panel.title)}"{size}>\n'
            f"<figcaption>{caption}</figcaption>\n</figure>"
        )
    items = "\n".join(
        f'<figure><img src="{esc(src)}" alt="{esc(panel.title)}: {esc(label)}">'
        f"<figcaption>{esc(label)}</figcaption></figure>"
        for src, label in panel.images
    )
    return (
        f'<figure id="{esc(panel.anchor)}">\n<div class="gallery">\n{items}\n</div>\n'
        f"<figcaption>{caption}</figcaption>\n</figure>"
    )
