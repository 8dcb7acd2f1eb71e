"""The HTML rendering of a :class:`SecurityReport`, with inline SVG charts.

The page is self-contained: charts are ``<svg>`` elements with presentation attributes (no
``style=`` attribute, no ``<style>`` or ``<script>`` element, nothing fetched), so it passes
the app's Content-Security-Policy on the admin page and opens offline as a file. The chart
geometry is computed here (pure); the template ``admin/security_report.html`` only draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, select_autoescape

from echo_identity.reports.security_report import SecurityReport

COLOURS = {
    "success": "#2e7d32",
    "failure": "#c62828",
    "locked": "#ef6c00",
    "tokens": "#1565c0",
    "vault": "#6a1b9a",
    "alerts": "#c62828",
    "events": "#455a64",
}
_ROW = 22  # height of one horizontal bar row
_LABEL_WIDTH = 220
_BAR_WIDTH = 360
_MAX_ROWS = 15

_environment = Environment(
    loader=PackageLoader("echo_identity", "web/templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str  # tooltip and accessible text


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    bars: list[Bar]
    labels: list[Label]
    legend: list[tuple[str, str]]  # (colour, series name)

    @property
    def empty(self) -> bool:
        return not self.bars


def horizontal_bars(
    title: str, rows: Sequence[tuple[str, Sequence[tuple[str, int]]]], colours: dict[str, str]
) -> Chart:
    """One row per label; each row's series are drawn as thin bars stacked vertically."""
    rows = list(rows)[:_MAX_ROWS]
    series = [name for name, _ in rows[0][1]] if rows else []
    peak = max((value for _, values in rows for _, value in values), default=0) or 1
    thickness = (_ROW - 6) / max(1, len(series))
    bars: list[Bar] = []
    labels: list[Label] = []
    for index, (label, values) in enumerate(rows):
        top = 10 + index * _ROW
        labels.append(Label(_LABEL_WIDTH - 6, top + _ROW / 2 + 2, label[:34], "end"))
        for position, (name, value) in enumerate(values):
            if value <= 0:
                continue
            bars.append(
                Bar(
                    x=_LABEL_WIDTH,
                    y=top + position * thickness,
                    width=max(1.0, _BAR_WIDTH * value / peak),
                    height=thickness - 1,
                    colour=colours[name],
                    title=f"{label}: {value} {name}",
                )
            )
        total = ", ".join(str(value) for _, value in values)
        labels.append(Label(_LABEL_WIDTH + _BAR_WIDTH + 6, top + _ROW / 2 + 2, total))
    width = _LABEL_WIDTH + _BAR_WIDTH + 90
    return Chart(title, width, 20 + len(rows) * _ROW, bars, labels, _legend(series, colours))


def daily_columns(
    title: str, days: Sequence[tuple[str, Sequence[tuple[str, int]]]], colours: dict[str, str]
) -> Chart:
    """Grouped columns per day (the last 60 days of the window at most)."""
    days = list(days)[-60:]
    series = [name for name, _ in days[0][1]] if days else []
    peak = max((value for _, values in days for _, value in values), default=0) or 1
    plot_height, group = 160, max(12, min(48, 640 // max(1, len(days))))
    column = (group - 4) / max(1, len(series))
    bars: list[Bar] = []
    labels: list[Label] = [Label(4, 14, f"max {peak}")]
    for index, (day, values) in enumerate(days):
        left = 40 + index * group
        for position, (name, value) in enumerate(values):
            if value <= 0:
                continue
            height = max(1.0, plot_height * value / peak)
            bars.append(
                Bar(
                    x=left + position * column,
                    y=20 + plot_height - height,
                    width=column - 1,
                    height=height,
                    colour=colours[name],
                    title=f"{day}: {value} {name}",
                )
            )
        if len(days) <= 14 or index % max(1, len(days) // 10) == 0:
            labels.append(Label(left, 20 + plot_height + 14, day[5:]))
    width = 60 + len(days) * group
    return Chart(title, max(width, 200), plot_height + 40, bars, labels, _legend(series, colours))


def _legend(series: Sequence[str], colours: dict[str, str]) -> list[tuple[str, str]]:
    return [(colours[name], name) for name in series]


def report_charts(report: SecurityReport) -> list[Chart]:
    """Every chart of the report, drawn from the same report object as the JSON."""
    return [
        daily_columns(
            "Sign-ins per day (UTC)",
            [
                (d.day, [("success", d.success), ("failure", d.failure), ("locked", d.locked)])
                for d in report.daily_logins
            ],
            COLOURS,
        ),
        horizontal_bars(
            "Tokens issued and vault reads per client",
            [
                (c.client_id, [("tokens", c.tokens_issued), ("vault", c.vault_reads)])
                for c in report.clients
            ],
            COLOURS,
        ),
        horizontal_bars(
            "Alerts by rule",
            [(f"{a.rule} ({a.severity})", [("alerts", a.count)]) for a in report.alerts],
            COLOURS,
        ),
        horizontal_bars(
            "Top source IPs",
            [(ip.ip, [("events", ip.events), ("failure", ip.failures)]) for ip in report.top_ips],
            COLOURS,
        ),
    ]


def render_report_html(report: SecurityReport, *, stylesheet: str | None = None) -> str:
    """The report as a complete HTML document; ``stylesheet`` links the app's CSS when set."""
    template = _environment.get_template("admin/security_report.html")
    return template.render(
        report=report.to_dict(), charts=report_charts(report), stylesheet=stylesheet
    )
