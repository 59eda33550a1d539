"""Charts: matplotlib's SVG, made fit to inline in a page beside other charts."""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from dashboard import charts

SVG = "{http://www.w3.org/2000/svg}"
LABELS = {"new": "New", "active": "Active", "at_risk": "At risk", "dormant": "Dormant", "reactivated": "Reactivated"}
WEEKS = [f"{day:02d} Mar" for day in (3, 10, 17)]


def _all_charts() -> list[str]:
    return [
        charts.lifecycle_now_chart(counts={"new": 5, "active": 1200, "at_risk": 40, "dormant": 900, "reactivated": 0},
                                   labels=LABELS),
        charts.lifecycle_history_chart(weeks=WEEKS, series={s: [1, 2, 3] for s in LABELS}, labels=LABELS),
        charts.dormant_flow_chart(weeks=WEEKS, inflow=[10, 0, 3], outflow=[2, 5, 0]),
    ]


def test_each_chart_is_an_svg_image_with_an_accessible_name():
    for svg in _all_charts():
        root = ET.fromstring(svg)  # well-formed, with nothing before the <svg> element
        assert root.tag == f"{SVG}svg"
        assert root.get("role") == "img"
        assert root.get("aria-label")
        assert root[0].tag == f"{SVG}title" and root[0].text == root.get("aria-label")
        assert root.find(f"{SVG}metadata") is None


def test_the_figures_are_in_the_chart_as_text():
    now, _, flow = _all_charts()

    texts = {"".join(t.itertext()) for t in ET.fromstring(now).iter(f"{SVG}text")}
    assert {"1,200", "900", "At risk"} <= texts
    assert "net change" in {"".join(t.itertext()) for t in ET.fromstring(flow).iter(f"{SVG}text")}



def _drawn_figures(monkeypatch, **chart_kwargs) -> dict:
    """Each chart's matplotlib figure, drawn, by chart id."""
    figures = {}
    svg = charts._svg

    def keep(figure, *, chart_id, label):
        figures[chart_id] = figure
        return svg(figure, chart_id=chart_id, label=label)

    monkeypatch.setattr(charts, "_svg", keep)
    twelve = [f"{day:02d} {month}" for month in ("Sep", "Oct", "Nov") for day in (7, 14, 21, 28)]
    charts.lifecycle_now_chart(counts={"new": 300, "active": 1380, "at_risk": 480, "dormant": 690, "reactivated": 150},
                               labels=LABELS)
    charts.lifecycle_history_chart(weeks=twelve, series={s: [2800] * 12 for s in LABELS}, labels=LABELS)
    charts.dormant_flow_chart(weeks=twelve, inflow=[39] * 12, outflow=[39] * 12)
    with matplotlib.rc_context(charts._RC):
        for figure in figures.values():
            FigureCanvasAgg(figure).draw()
    return figures


def test_every_label_and_legend_entry_is_drawn_inside_its_chart(monkeypatch):
    # A legend beside the plot ran past the figure's right edge: "became dorm…" in the page.
    for chart_id, figure in _drawn_figures(monkeypatch).items():
        renderer = figure.canvas.get_renderer()
        width, height = figure.bbox.width, figure.bbox.height
        texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text()]
        assert texts, chart_id
        for text in texts:
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (chart_id, text.get_text())
        legend = figure.axes[0].get_legend()
        if legend is not None:
            box = legend.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height, chart_id

def test_ids_are_unique_on_a_page_and_every_reference_stays_inside_its_chart():
    seen = []
    for svg in _all_charts():
        ids = re.findall(r'\bid="([^"]+)"', svg)
        chart_id = ids[0]
        assert all(i == chart_id or i.startswith(chart_id + "-") for i in ids)
        references = re.findall(r'href="#([^"]+)"', svg) + re.findall(r"url\(#([^)]+)\)", svg)
        assert references and set(references) <= set(ids)
        # matplotlib's "*" rule would style the whole page: it is scoped to the chart.
        assert re.search(r"<style[^>]*>#" + re.escape(chart_id) + r" \*\{", svg)
        seen += ids
    assert len(seen) == len(set(seen))


def test_the_same_figures_draw_the_same_bytes_and_leave_matplotlib_settings_alone():
    before = dict(matplotlib.rcParams)

    assert _all_charts() == _all_charts()
    assert dict(matplotlib.rcParams) == before


def test_matplotlib_writes_its_files_under_var_dir_never_in_home(tmp_path):
    code = (
        "import django; django.setup(); from dashboard import charts; "
        "charts.dormant_flow_chart(weeks=['a'], inflow=[1], outflow=[0]); print(charts.matplotlib.get_configdir())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "MPLBACKEND")}
    env.update({"HOME": str(tmp_path / "home"), "VAR_DIR": str(tmp_path / "var"), "DEBUG": "1",
                "DJANGO_SETTINGS_MODULE": "config.settings"})
    (tmp_path / "home").mkdir()

    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "var" / "matplotlib")
    assert any((tmp_path / "var" / "matplotlib").iterdir())  # its font cache
    assert not any((tmp_path / "home").iterdir())
