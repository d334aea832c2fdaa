"""`meta-inbox report`: one HTML page about a period, for people who read neither SQL nor notebooks.

The page is self-contained (inline SVG and CSS, a few lines of inline script that only mark each
plot as drawn), so it opens offline and can be forwarded as a file. Its numbers come from the
metric views, read with SQL that DuckDB, PostgreSQL and the lake's views share; days and hours
are in the `business_hours` timezone (UTC without it).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from . import destinations
from .config import Analysis
from .errors import BadInput

Query = Callable[[str], Sequence[tuple[Any, ...]]]

PLATFORM_COLORS = {"messenger": "#0a7cff", "instagram": "#d62976"}
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Open threads by how long the customer has waited, in hours: (label, lower bound).
AGE_BUCKETS = (
    ("< 1 h", 0),
    ("1–4 h", 1),
    ("4–24 h", 4),
    ("1–3 d", 24),
    ("3–7 d", 72),
    ("7–30 d", 168),
    ("> 30 d", 720),
)


@dataclass(frozen=True)
class Period:
    """[since, until) in UTC, with the zone its days are counted in."""

    since: datetime
    until: datetime
    zone: ZoneInfo

    def days(self) -> list[date]:
        first = self.since.astimezone(self.zone).date()
        last = (self.until - timedelta(microseconds=1)).astimezone(self.zone).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def sql(self, column: str) -> str:
        """`column` within the period, as SQL."""
        since, until = self.since.isoformat(sep=" "), self.until.isoformat(sep=" ")
        return f"{column} >= '{since}' and {column} < '{until}'"


def period(
    since: str | None, until: str | None, zone: ZoneInfo, now: datetime | None = None
) -> Period:
    """The report's period: a date is a whole day in `zone` (`until` included); default the
    7 days up to now."""
    end = _moment(until, zone, "--until", end_of_day=True) if until else now or datetime.now(UTC)
    start = _moment(since, zone, "--since", end_of_day=False) if since else end - timedelta(days=7)
    if start >= end:
        raise BadInput(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()}).")
    return Period(start, end, zone)


def _moment(value: str, zone: ZoneInfo, name: str, *, end_of_day: bool) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise BadInput(
                f"{name} {value!r} is not a date: use YYYY-MM-DD or an ISO 8601 time."
            ) from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)
    if end_of_day:
        day += timedelta(days=1)
    return datetime.combine(day, time(), zone).astimezone(UTC)


def report_zone(analysis: Analysis) -> ZoneInfo:
    schedule = analysis.schedule()
    return schedule.zone if schedule else ZoneInfo("UTC")


def write_report(
    pipeline: Any, output: Path, since: str | None, until: str | None, analysis: Analysis
) -> Period:
    """Write the report of `pipeline`'s dataset (a SQL destination or a local lake) to `output`;
    its period."""
    chosen = period(since, until, report_zone(analysis))
    folder = destinations.local_lake(pipeline)
    if folder is not None:
        from .lake import connect

        with connect(folder) as connection:
            page = render(
                _reader(lambda sql: connection.execute(sql).fetchall(),
                        lambda name: f'"{pipeline.dataset_name}"."{name}"'),
                chosen,
                analysis,
            )  # fmt: skip
    elif destinations.speaks_sql(pipeline):
        with pipeline.sql_client() as client:
            if not client.has_dataset():
                raise BadInput(
                    f"dataset {pipeline.dataset_name} has no tables yet: run an export first."
                )
            page = render(
                _reader(
                    lambda sql: client.execute_sql(sql) or [], client.make_qualified_table_name
                ),
                chosen,
                analysis,
            )
    else:
        raise BadInput("the report reads DuckDB, PostgreSQL or a local Parquet lake.")
    output.write_text(page, encoding="utf-8")
    return chosen


def _reader(execute: Query, qualified: Callable[[str], str]) -> Query:
    """Runs the report's SQL, which names relations as `{messages}`, `{conversation_metrics}`
    and `{sla_daily}`."""
    names = {name: qualified(name) for name in ("messages", "conversation_metrics", "sla_daily")}
    return lambda sql: execute(sql.format(**names))


def render(read: Query, chosen: Period, analysis: Analysis) -> str:
    """The report's HTML."""
    first_sla, resolution_sla = analysis.sla_seconds()
    has_hours = analysis.schedule() is not None
    sections = [
        _volume(read, chosen),
        _first_responses(read, chosen, has_hours),
        _breaches(read, chosen, first_sla, resolution_sla),
        _open_ages(read, chosen),
        _busiest_hours(read, chosen),
    ]
    days = chosen.days()
    title = f"Inbox report {days[0].isoformat()} – {days[-1].isoformat()}"
    return _PAGE.format(
        title=html.escape(title),
        subtitle=html.escape(
            f"Days and hours in {chosen.zone.key}. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} "
            "UTC by meta-inbox from the metric views."
        ),
        sections="\n".join(sections),
    )


def _volume(read: Query, chosen: Period) -> str:
    rows = read(
        "select created_time, platform from {messages} "
        f"where deleted_at is null and {chosen.sql('created_time')}"
    )
    counts: Counter[tuple[date, str]] = Counter(
        (created.astimezone(chosen.zone).date(), platform) for created, platform in rows
    )
    days = chosen.days()
    platforms = sorted({platform for _, platform in counts} or PLATFORM_COLORS)
    series = {p: [counts[(day, p)] for day in days] for p in platforms}
    labels = [f"{day:%a %d}" for day in days]
    table = _table(
        ["day", *platforms, "total"],
        [
            [
                day.isoformat(),
                *(counts[(day, p)] for p in platforms),
                sum(counts[(day, p)] for p in platforms),
            ]
            for day in days
        ],
    )
    return _section(
        "Messages per day",
        f"{len(rows)} messages in the period, both directions, by platform.",
        _bars(labels, series, [PLATFORM_COLORS.get(p, "#888") for p in platforms]),
        table,
    )


def _first_responses(read: Query, chosen: Period, has_hours: bool) -> str:
    rows = read(
        "select platform, first_response_seconds, first_response_business_seconds "
        "from {conversation_metrics} "
        f"where first_response_known and {chosen.sql('first_customer_message_at')}"
    )
    unknown = read(
        "select count(*) from {conversation_metrics} "
        f"where not first_response_known and {chosen.sql('last_activity_at')}"
    )[0][0]
    labels, series, lines = [], {"calendar": [], "business": []}, []
    for platform in sorted({row[0] for row in rows} or PLATFORM_COLORS):
        calendar = sorted(row[1] for row in rows if row[0] == platform and row[1] is not None)
        business = sorted(row[2] for row in rows if row[0] == platform and row[2] is not None)
        for name, fraction in (("p50", 0.5), ("p90", 0.9)):
            labels.append(f"{platform} {name}")
            series["calendar"].append(_percentile(calendar, fraction) / 3600)
            series["business"].append(_percentile(business, fraction) / 3600)
            lines.append(
                [
                    platform,
                    name,
                    _hours(_percentile(calendar, fraction)),
                    _hours(_percentile(business, fraction)) if has_hours else "no business_hours",
                    len(calendar),
                ]
            )
    note = (
        f"Threads whose first customer message falls in the period, in hours. {unknown} thread(s) "
        "with activity in the period have an unknown first message (Instagram hides the sender "
        "of all but the newest 20 messages) and are left out."
    )
    return _section(
        "First response",
        note,
        _bars(labels, series, ["#6b7280", "#059669"], grouped=True, unit="h"),
        _table(["platform", "percentile", "calendar", "business", "threads"], lines),
    )


def _breaches(
    read: Query, chosen: Period, first_sla: float | None, resolution_sla: float | None
) -> str:
    days = chosen.days()
    rows = read(
        "select day, sum(threads), sum(first_response_breaches), sum(resolution_breaches) "
        f"from {{sla_daily}} where day >= '{days[0].isoformat()}' "
        f"and day <= '{days[-1].isoformat()}' group by day"
    )
    by_day = {_as_date(row[0]): [int(value or 0) for value in row[1:]] for row in rows}
    values = [by_day.get(day, [0, 0, 0]) for day in days]
    targets = ", ".join(
        f"{name} {_hours(seconds)} of business time"
        for name, seconds in (("first response", first_sla), ("resolution", resolution_sla))
        if seconds
    )
    note = (
        f"Breaches of the targets ({targets}) among the threads whose first customer message "
        "falls on each day."
        if targets
        else "No targets set (first_response_sla, resolution_sla): no breaches can be counted."
    )
    return _section(
        "Service levels",
        note,
        _bars(
            [f"{day:%a %d}" for day in days],
            {
                "threads": [v[0] for v in values],
                "first response breached": [v[1] for v in values],
                "resolution breached": [v[2] for v in values],
            },
            ["#9ca3af", "#dc2626", "#f59e0b"],
            grouped=True,
        ),
        _table(
            ["day", "threads", "first response breached", "resolution breached"],
            [[day.isoformat(), *value] for day, value in zip(days, values, strict=True)],
        ),
    )


def _open_ages(read: Query, chosen: Period) -> str:
    at = min(datetime.now(UTC), chosen.until)
    rows = read(
        "select last_customer_message_at from {conversation_metrics} "
        f"where is_open and last_customer_message_at < '{at.isoformat(sep=' ')}'"
    )
    counts = Counter(_age_bucket((at - row[0]).total_seconds() / 3600) for row in rows)
    labels = [label for label, _ in AGE_BUCKETS]
    return _section(
        "Open threads by age",
        f"{len(rows)} thread(s) waiting for the Page at the last export (unanswered, in inbox or "
        f"other), by how long the customer had waited at {at:%Y-%m-%d %H:%M} UTC; threads whose "
        "customer wrote later are left out.",
        _bars(labels, {"threads": [counts[label] for label in labels]}, ["#7c3aed"]),
        _table(["waiting", "threads"], [[label, counts[label]] for label in labels]),
    )


def _age_bucket(hours: float) -> str:
    return [label for label, lower in AGE_BUCKETS if hours >= lower][-1]


def _busiest_hours(read: Query, chosen: Period) -> str:
    rows = read(
        "select created_time from {messages} where deleted_at is null and details_available "
        f"and not is_from_page and {chosen.sql('created_time')}"
    )
    grid: Counter[tuple[int, int]] = Counter()
    for (created,) in rows:
        moment = created.astimezone(chosen.zone)
        grid[(moment.weekday(), moment.hour)] += 1
    busiest = sorted(grid.items(), key=lambda item: (-item[1], item[0]))[:5]
    return _section(
        "Busiest hours",
        f"{len(rows)} customer messages by weekday and hour of the day ({chosen.zone.key}).",
        _heatmap(grid),
        _table(
            ["weekday", "hour", "messages"],
            [[WEEKDAY_NAMES[day], f"{hour:02d}:00", count] for (day, hour), count in busiest],
        ),
    )


# Drawing: plain SVG, sized by a viewBox so it scales with the page.


def _bars(
    labels: list[str],
    series: dict[str, list[float]],
    colors: list[str],
    *,
    grouped: bool = False,
    unit: str = "",
) -> str:
    """Bars per label: stacked series, or side by side when `grouped`."""
    width, height, left, bottom, top = 640, 260, 44, 48, 28
    totals = [
        max(values) if grouped else sum(values) for values in zip(*series.values(), strict=True)
    ]
    scale = max([*totals, 1e-9])
    step = (width - left - 8) / max(len(labels), 1)
    bar = step * 0.7 / (len(series) if grouped else 1)
    parts = [_axis(width, height, left, bottom, top, scale, unit)]
    for index, label in enumerate(labels):
        x = left + index * step + step * 0.15
        base = height - bottom
        for number, (name, values) in enumerate(series.items()):
            size = values[index] / scale * (height - bottom - top)
            title = f"{label} · {name}: {_number(values[index])}{unit}"
            offset = x + number * bar if grouped else x
            y = base - size
            parts.append(
                f'<rect class="mark" x="{offset:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{max(size, 0.0):.1f}" fill="{colors[number % len(colors)]}">'
                f"<title>{html.escape(title)}</title></rect>"
            )
            if not grouped:
                base = y
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 14}" font-size="10" '
            f'text-anchor="middle">{html.escape(label)}</text>'
        )
    legend = "".join(
        f'<rect x="{left + n * 150}" y="6" width="10" height="10" '
        f'fill="{colors[n % len(colors)]}"/>'
        f'<text x="{left + n * 150 + 14}" y="15" font-size="11">{html.escape(name)}</text>'
        for n, name in enumerate(series)
    )
    return _svg(width, height, legend + "".join(parts))


def _axis(
    width: int, height: int, left: int, bottom: int, top: int, scale: float, unit: str
) -> str:
    lines = []
    for tick in range(5):
        value = scale * tick / 4
        y = height - bottom - (height - bottom - top) * tick / 4
        lines.append(
            f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
            f"{_number(value)}{unit}</text>"
        )
    return "".join(lines)


def _heatmap(grid: Counter[tuple[int, int]]) -> str:
    width, height, left, top, cell_w, cell_h = 640, 230, 40, 24, 24, 26
    peak = max(grid.values(), default=0) or 1
    parts = [
        f'<text x="{left + hour * cell_w + cell_w / 2}" y="{top - 6}" font-size="10" '
        f'text-anchor="middle">{hour:02d}</text>'
        for hour in range(0, 24, 3)
    ]
    for day, name in enumerate(WEEKDAY_NAMES):
        y = top + day * cell_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 17}" font-size="11" text-anchor="end">{name}</text>'
        )
        for hour in range(24):
            count = grid[(day, hour)]
            shade = 0.06 + 0.94 * count / peak if count else 0.03
            parts.append(
                f'<rect class="mark" x="{left + hour * cell_w}" y="{y}" width="{cell_w - 2}" '
                f'height="{cell_h - 2}" fill="#0a7cff" fill-opacity="{shade:.2f}">'
                f"<title>{name} {hour:02d}:00 · {count}</title></rect>"
            )
    return _svg(width, height, "".join(parts))


def _svg(width: int, height: int, body: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _section(title: str, note: str, plot: str, table: str) -> str:
    return (
        f'<section><h2>{html.escape(title)}</h2><p class="note">{html.escape(note)}</p>'
        f'<div class="pair"><figure class="plot" data-plot="{html.escape(title)}">{plot}'
        f"</figure>{table}</div></section>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _percentile(ordered: list[float], fraction: float) -> float:
    """Linear interpolation between the nearest ranks (SQL's `percentile_cont`); 0 if empty."""
    if not ordered:
        return 0.0
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 10 else f"{value:.1f}"


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# Once laid out, each plot is marked with its drawn size and marks: a browser, not a parser,
# says the page renders (tests read it with `chromium --dump-dom`).
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; color: #111827; margin: 24px auto; max-width: 1100px;
  padding: 0 16px; }}
h1 {{ margin-bottom: 0; }} .note {{ color: #4b5563; margin-top: 4px; }}
section {{ border-top: 1px solid #e5e7eb; padding: 8px 0 16px; }}
.pair {{ display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }}
figure {{ margin: 0; }} svg {{ max-width: 100%; height: auto; font-family: inherit; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ padding: 2px 8px; border-bottom: 1px solid #f3f4f6; text-align: right; }}
th {{ background: #f9fafb; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="note">{subtitle}</p>
{sections}
<script>
for (const figure of document.querySelectorAll("figure.plot")) {{
  const box = figure.querySelector("svg").getBBox();
  const marks = figure.querySelectorAll(".mark").length;
  figure.dataset.rendered = box.width > 0 && box.height > 0 && marks > 0 ? "yes" : "no";
  figure.dataset.marks = marks;
}}
document.body.dataset.plots = document.querySelectorAll('figure[data-rendered="yes"]').length;
</script>
</body></html>
"""
