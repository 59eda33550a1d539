"""The home page's charts, drawn by matplotlib on the server as SVG and inlined in the page.

Drawn here, they need no JavaScript, no CDN and no exception to the Content-Security-Policy,
and they work offline and behind a proxy. Each function takes plain figures and returns SVG
markup ready to inline: ``role="img"``, an ``aria-label`` and a ``<title>`` say what it shows
(the page prints the same figures in a table for screen readers and copying).

matplotlib is used without pyplot (``matplotlib.figure.Figure`` saved with the "svg" format
needs neither a display nor a GUI backend) and its settings apply only inside the lock, through
``rc_context``: pyplot's global "current figure" and matplotlib's text caches are not safe to
share between the threads of one web process. Where matplotlib keeps its files (MPLCONFIGDIR):
dashboard/apps.py.
"""

from __future__ import annotations

import io
import re
import threading

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

_LOCK = threading.Lock()

# Text stays text (smaller than glyph outlines, selectable, drawn in the page's fonts); a fixed
# hash salt makes the same figures give the same bytes.
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "dashboard",
    "font.family": ["DejaVu Sans", "sans-serif"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

# One colour per lifecycle state on every chart (Okabe-Ito: told apart with colour blindness).
STATE_COLOURS = {
    "new": "#56B4E9",
    "active": "#009E73",
    "at_risk": "#E69F00",
    "dormant": "#D55E00",
    "reactivated": "#CC79A7",
}
INFLOW_COLOUR = "#D55E00"
OUTFLOW_COLOUR = "#009E73"
NET_COLOUR = "#333333"


def _svg(figure: Figure, *, chart_id: str, label: str) -> str:
    """The figure as inline SVG: no XML prologue or metadata, ids prefixed with ``chart_id``
    (two charts on one page would otherwise share ids such as "figure_1" and clip paths),
    matplotlib's global ``*`` style scoped to this chart, and the accessible name."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{chart_id}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{chart_id}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{chart_id}-\1)", svg)
    svg = svg.replace("*{stroke-linejoin", f"#{chart_id} *{{stroke-linejoin", 1)
    escaped = _attribute(label)
    svg = svg.replace(
        "<svg ",
        f'<svg id="{chart_id}" class="dashboard-chart-svg" role="img" aria-label="{escaped}" ',
        1,
    )
    opening_end = svg.index(">") + 1
    return f"{svg[:opening_end]}\n <title>{escaped}</title>{svg[opening_end:]}"


def _attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _figure(width: float, height: float, **margins: float) -> Figure:
    """A white figure (also in the admin's dark theme: the axes and labels are drawn dark) with
    fixed margins, in inches: matplotlib's automatic layouts draw the whole figure once more
    to measure it, which doubled the time of a chart."""
    figure = Figure(figsize=(width, height), facecolor="white")
    left, right = margins.get("left", 0.8), margins.get("right", 0.2)
    bottom, top = margins.get("bottom", 0.5), margins.get("top", 0.15)
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return figure


# Room above the plot for a one-row legend, in inches.
LEGEND_TOP = 0.45


def _legend_above(axes, *, columns: int) -> None:
    """The legend in one row above the plot. Beside the plot it needed a right margin sized to
    the longest label, and the browser's font (the text stays text) can be wider than
    matplotlib measured: "became dormant" was cut at the edge. Above, the row has the whole
    width and the plot keeps it too."""
    axes.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=columns, frameon=False,
                borderaxespad=0.0, handlelength=1.5, columnspacing=1.5)


def _thousands(axis) -> None:
    axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axis.set_major_locator(MaxNLocator(integer=True))


def lifecycle_now_chart(*, counts: dict[str, int], labels: dict[str, str]) -> str:
    """Horizontal bars: customers in each state now."""
    states = list(counts)
    with _LOCK, matplotlib.rc_context(_RC):
        figure = _figure(5.2, 2.4, left=0.95, right=0.4)
        axes = figure.subplots()
        positions = range(len(states))
        bars = axes.barh(positions, [counts[s] for s in states], color=[STATE_COLOURS.get(s, "#999999") for s in states])
        axes.set_yticks(list(positions), [labels.get(s, s) for s in states])
        axes.invert_yaxis()
        axes.bar_label(bars, labels=[f"{counts[s]:,}" for s in states], padding=3)
        _thousands(axes.xaxis)
        axes.margins(x=0.15)
        axes.set_xlabel("customers")
        return _svg(figure, chart_id="chart-lifecycle-now", label="Customers by lifecycle state now")


def lifecycle_history_chart(*, weeks: list[str], series: dict[str, list[int]], labels: dict[str, str]) -> str:
    """Stacked areas: customers by state at the end of each week (one polygon per state)."""
    with _LOCK, matplotlib.rc_context(_RC):
        figure = _figure(7.5, 3.2, bottom=0.65, top=LEGEND_TOP)
        axes = figure.subplots()
        positions = list(range(len(weeks)))
        axes.stackplot(positions, *series.values(), labels=[labels.get(s, s) for s in series],
                       colors=[STATE_COLOURS.get(s, "#999999") for s in series], alpha=0.9)
        if len(positions) > 1:
            axes.set_xlim(positions[0], positions[-1])
        axes.set_xticks(positions, weeks, rotation=45, ha="right")
        _thousands(axes.yaxis)
        axes.set_ylabel("customers")
        _legend_above(axes, columns=len(series))
        return _svg(figure, chart_id="chart-lifecycle-weeks",
                    label=f"Customers by lifecycle state at the end of each of the last {len(weeks)} weeks")


def dormant_flow_chart(*, weeks: list[str], inflow: list[int], outflow: list[int]) -> str:
    """Dormant inflow above the axis, outflow below it, and the net change as a line."""
    with _LOCK, matplotlib.rc_context(_RC):
        figure = _figure(7.5, 3.0, bottom=0.65, top=LEGEND_TOP)
        axes = figure.subplots()
        positions = list(range(len(weeks)))
        axes.bar(positions, inflow, color=INFLOW_COLOUR, width=0.7, label="became dormant")
        axes.bar(positions, [-v for v in outflow], color=OUTFLOW_COLOUR, width=0.7, label="left dormancy")
        axes.plot(positions, [i - o for i, o in zip(inflow, outflow)], color=NET_COLOUR, marker="o",
                  markersize=3, linewidth=1.2, label="net change")
        axes.axhline(0, color="#666666", linewidth=0.8)
        axes.set_xticks(positions, weeks, rotation=45, ha="right")
        _thousands(axes.yaxis)
        axes.set_ylabel("customers")
        _legend_above(axes, columns=3)
        return _svg(figure, chart_id="chart-dormant-flow",
                    label=f"Customers entering and leaving dormancy in each of the last {len(weeks)} weeks")
