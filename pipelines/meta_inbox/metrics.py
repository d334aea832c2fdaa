"""Inbox metrics: SQL views over the loaded tables, defined once for DuckDB and PostgreSQL.

Each view is data (its SQL and a description of every column), read by `create_metric_views`,
the docs (`metrics_markdown`) and the tests. The SQL keeps to what both engines share.

Only messages with details count as sent by a customer or by the Page: Instagram hides the
sender of messages older than a thread's newest 20. Graph gives times to the second and no order
within a second, so a Page message sent in the same second as a customer's does not count as its
answer: every answer is strictly later.

Business time and service levels come from the settings as data: the views are written with two
tables, `business_clock` (the schedule as open and closed stretches, see `business_hours.py`)
and `sla_targets`, and business seconds between two instants are the difference of two clock
readings. Views read the clock as `{clock:<instant>}` and the local day as
`{local_day:<instant>}` in their SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt
from dlt.destinations.sql_client import SqlClientBase

from .business_hours import clock_rows
from .config import Analysis
from .destinations import on_postgres, speaks_sql
from .tables import CONVERSATION_ID, FOLDER, PAGE_ID, PLATFORM, Column, markdown_section


@dataclass(frozen=True)
class MetricView:
    """A view over the dataset. `select` names relations as `{messages}`, `{conversations}` or
    another view's `{name}`, replaced by their qualified names on creation."""

    name: str
    description: str
    columns: tuple[Column, ...]
    select: str


# Each customer message that the Page answered, with its answer's time: `{answers}` in a
# view's SQL, a CTE, so that `conversation_metrics` need not find the answering messages' ids.
_ANSWERS = """answers as (
    -- Newest first, customers before the Page within a second: the rows before a customer
    -- message are exactly the later ones (and same-second customer messages). A frame growing
    -- from the partition's start keeps this one pass per thread, also on Postgres.
    select id, conversation_id, page_id, platform, created_time, reply_at,
           -- Not extract(epoch from reply_at - created_time): on DuckDB an interval between
           -- two instants costs six times as much (measured on a million messages).
           cast(extract(epoch from reply_at) - extract(epoch from created_time)
                as double precision) as response_seconds
    from (
        select id, conversation_id, page_id, platform, created_time, is_from_page,
               min(case when is_from_page then created_time end) over (
                   partition by conversation_id
                   order by created_time desc, is_from_page
                   rows between unbounded preceding and 1 preceding
               ) as reply_at
        from {messages}
        where details_available and deleted_at is null
    ) as timed
    where not is_from_page and reply_at is not null
)"""


RESPONSE_TIMES = MetricView(
    name="response_times",
    description="One row per customer message that the Page answered: the answer is the Page's "
    "first message of the thread sent strictly later (a Page message in the same second does "
    "not count, as Graph does not order messages within a second; among several Page messages "
    "in the answering second, the lowest id in byte order is named). Every customer message "
    "waiting for the same answer gets its own row. Messages without details are left out.",
    columns=(
        CONVERSATION_ID,
        PAGE_ID,
        PLATFORM,
        Column("customer_message_id", "text", "The customer's message (`messages.id`)."),
        Column("customer_message_at", "timestamp", "When the customer sent it (UTC)."),
        Column("reply_message_id", "text", "The Page's answer (`messages.id`)."),
        Column("reply_at", "timestamp", "When the Page sent its answer (UTC)."),
        Column("response_seconds", "double", "`reply_at - customer_message_at` in seconds."),
        Column(
            "response_business_seconds",
            "double",
            "The seconds of that wait within business hours (`business_hours`); null without them.",
        ),
    ),
    select="""
with {answers},
page_seconds as (
    -- "C": byte order, the same in both engines whatever the database's collation.
    select conversation_id, created_time, min(id collate "C") as id
    from {messages}
    where details_available and deleted_at is null and is_from_page
    group by conversation_id, created_time
)
select answers.conversation_id,
       answers.page_id,
       answers.platform,
       answers.id as customer_message_id,
       answers.created_time as customer_message_at,
       page_seconds.id as reply_message_id,
       answers.reply_at,
       answers.response_seconds,
       {clock:answers.reply_at} - {clock:answers.created_time} as response_business_seconds
from answers
join page_seconds
  on page_seconds.conversation_id = answers.conversation_id
 and page_seconds.created_time = answers.reply_at
""",
)

CONVERSATION_METRICS = MetricView(
    name="conversation_metrics",
    description="One row per conversation, also those without messages with details. The "
    "customer waits for an answer while no Page message is strictly later than their newest "
    "message, so a Page message in the very same second leaves the thread unanswered.",
    columns=(
        CONVERSATION_ID,
        PAGE_ID,
        PLATFORM,
        FOLDER,
        Column(
            "first_customer_message_at",
            "timestamp",
            "The customer's oldest message with details (UTC): their first message where "
            "`first_response_known`.",
        ),
        Column(
            "first_page_reply_at",
            "timestamp",
            "The Page's first message strictly after `first_customer_message_at` (UTC).",
        ),
        Column(
            "first_response_known",
            "bool",
            "False when a message without details is older than `first_customer_message_at` "
            "(Instagram withholds the sender of all but a thread's newest 20), or there are "
            "messages without details and none from the customer with them: the thread's first "
            "customer message, and so its first response, is unknown.",
        ),
        Column(
            "first_response_seconds",
            "double",
            "`first_page_reply_at - first_customer_message_at` in seconds; null unless "
            "`first_response_known`.",
        ),
        Column(
            "first_response_business_seconds",
            "double",
            "The seconds of that wait within business hours; null unless `first_response_known`, "
            "or without `business_hours`.",
        ),
        Column(
            "first_response_breached",
            "bool",
            "Whether the first response took longer than `first_response_sla` in business time: "
            "true also while unanswered once that much business time has passed; null while it "
            "cannot be known yet, unless `first_response_known`, or without the settings.",
        ),
        Column(
            "median_response_seconds",
            "double",
            "Median `response_seconds` of the thread's rows in `response_times`.",
        ),
        Column("customer_messages", "bigint", "Messages with details sent by customers."),
        Column("page_messages", "bigint", "Messages with details sent by the Page."),
        Column("messages_without_details", "bigint", "Messages whose sender Graph withholds."),
        Column(
            "last_activity_at",
            "timestamp",
            "The newest message, with details or not, else `conversations.updated_time` (UTC).",
        ),
        Column(
            "last_customer_message_at",
            "timestamp",
            "The customer's newest message with details (UTC).",
        ),
        Column(
            "resolved_at",
            "timestamp",
            "When a run first found the thread archived (`page_done`) after having seen it "
            "outside `page_done` since the customer's last message (UTC): as precise as runs "
            "are frequent. Null while it is not, or when no run saw it open (archived before "
            "the first export).",
        ),
        Column(
            "resolution_seconds",
            "double",
            "`resolved_at - last_customer_message_at` in seconds.",
        ),
        Column(
            "resolution_business_seconds",
            "double",
            "The seconds of that wait within business hours; null without `business_hours`.",
        ),
        Column(
            "resolution_breached",
            "bool",
            "Whether resolving took longer than `resolution_sla` in business time: true also for "
            "a thread still in `inbox` or `other` once that much business time has passed since "
            "`last_customer_message_at`; null while it cannot be known yet, for unresolved "
            "threads in `page_done`, `archived_legacy` or `spam`, or without the settings.",
        ),
        Column(
            "last_message_from",
            "text",
            "`customer` or `page`: who sent the newest message with details (`customer` when "
            "both did in that second); null without such messages.",
        ),
        Column(
            "is_unanswered",
            "bool",
            "`last_message_from = 'customer'`: the customer waits for the Page.",
        ),
        Column(
            "is_open",
            "bool",
            "Unanswered and in the `inbox` or `other` folder (not archived, not spam).",
        ),
    ),
    select="""
with sides as (
    select conversation_id,
           count(*) filter (where details_available and not is_from_page) as customer_messages,
           count(*) filter (where details_available and is_from_page) as page_messages,
           count(*) filter (where not details_available) as messages_without_details,
           min(created_time) filter (where details_available and not is_from_page)
               as first_customer_message_at,
           max(created_time) filter (where details_available and not is_from_page)
               as last_customer_message_at,
           max(created_time) filter (where details_available and is_from_page)
               as last_page_message_at,
           min(created_time) filter (where not details_available) as first_undetailed_at,
           max(created_time) as last_message_at
    from {messages}
    where deleted_at is null
    group by conversation_id
),
resolutions as (
    -- The first observation in page_done after one outside it, both no older than the
    -- customer's last message: the thread was seen open, then seen archived.
    select archived.conversation_id, min(archived.observed_at) as resolved_at
    from {conversation_history} as archived
    join sides on sides.conversation_id = archived.conversation_id
    where archived.folder = 'page_done'
      and archived.observed_at >= sides.last_customer_message_at
      and exists (
          select 1 from {conversation_history} as open_before
          where open_before.conversation_id = archived.conversation_id
            and open_before.folder <> 'page_done'
            and open_before.observed_at >= sides.last_customer_message_at
            and open_before.observed_at < archived.observed_at
      )
    group by archived.conversation_id
),
{answers},
responses as (
    -- The first customer message's answer is the earliest answer of the thread.
    select conversation_id,
           min(reply_at) as first_page_reply_at,
           percentile_cont(0.5) within group (order by response_seconds)
               as median_response_seconds
    from answers
    group by conversation_id
),
threads as (
    select conversations.id as conversation_id,
           conversations.page_id,
           conversations.platform,
           conversations.folder,
           sides.first_customer_message_at,
           responses.first_page_reply_at,
           -- A message without details in the same second changes no first response: an
           -- answer is strictly later either way.
           coalesce(sides.first_undetailed_at >= sides.first_customer_message_at,
                    sides.first_undetailed_at is null) as first_response_known,
           cast(responses.median_response_seconds as double precision)
               as median_response_seconds,
           coalesce(sides.customer_messages, 0) as customer_messages,
           coalesce(sides.page_messages, 0) as page_messages,
           coalesce(sides.messages_without_details, 0) as messages_without_details,
           coalesce(sides.last_message_at, conversations.updated_time) as last_activity_at,
           sides.last_customer_message_at,
           resolutions.resolved_at,
           cast(extract(epoch from resolutions.resolved_at - sides.last_customer_message_at)
                as double precision) as resolution_seconds,
           case
               -- A tie goes to the customer: no Page message is strictly later.
               when sides.last_customer_message_at
                    >= coalesce(sides.last_page_message_at, sides.last_customer_message_at)
                   then 'customer'
               when sides.last_page_message_at is not null then 'page'
           end as last_message_from
    from {conversations} as conversations
    left join sides on sides.conversation_id = conversations.id
    left join responses on responses.conversation_id = conversations.id
    left join resolutions on resolutions.conversation_id = conversations.id
    where conversations.deleted_at is null
),
clocked as (
    select threads.*,
           {clock:first_customer_message_at} as clock_first_customer,
           {clock:first_page_reply_at} as clock_first_reply,
           {clock:last_customer_message_at} as clock_last_customer,
           {clock:resolved_at} as clock_resolved,
           {clock:current_timestamp} as clock_now
    from threads
),
measured as (
    select clocked.*,
           case when first_response_known then
               cast(extract(epoch from first_page_reply_at - first_customer_message_at)
                    as double precision)
           end as first_response_seconds,
           case when first_response_known then clock_first_reply - clock_first_customer end
               as first_response_business_seconds,
           clock_resolved - clock_last_customer as resolution_business_seconds
    from clocked
)
select conversation_id, page_id, platform, folder,
       first_customer_message_at, first_page_reply_at, first_response_known,
       first_response_seconds, first_response_business_seconds,
       case
           when not first_response_known or targets.first_response_sla_seconds is null then null
           when first_page_reply_at is not null
               then first_response_business_seconds > targets.first_response_sla_seconds
           -- Unanswered: breached once the wait so far is longer than the target.
           when clock_now - clock_first_customer > targets.first_response_sla_seconds then true
       end as first_response_breached,
       median_response_seconds, customer_messages, page_messages, messages_without_details,
       last_activity_at, last_customer_message_at, resolved_at, resolution_seconds,
       resolution_business_seconds,
       case
           when targets.resolution_sla_seconds is null then null
           when resolved_at is not null
               then resolution_business_seconds > targets.resolution_sla_seconds
           -- Archived or spam without a seen resolution: when it ended is unknown.
           when folder in ('inbox', 'other')
                and clock_now - clock_last_customer > targets.resolution_sla_seconds then true
       end as resolution_breached,
       last_message_from,
       coalesce(last_message_from = 'customer', false) as is_unanswered,
       coalesce(last_message_from = 'customer', false) and folder in ('inbox', 'other')
           as is_open
from measured
cross join {sla_targets} as targets
""",
)

SLA_DAILY = MetricView(
    name="sla_daily",
    description="Service levels per day of the threads' first customer message, Page and "
    "platform: threads whose first customer message is known (`first_response_known`), "
    "counted on the day it was sent, in the `business_hours` timezone (UTC without it).",
    columns=(
        Column("day", "date", "The day of the threads' first customer message."),
        PAGE_ID,
        PLATFORM,
        Column("threads", "bigint", "Threads whose first customer message was sent that day."),
        Column("answered", "bigint", "... of them with a first response."),
        Column("first_response_breaches", "bigint", "... of them with `first_response_breached`."),
        Column("resolution_breaches", "bigint", "... of them with `resolution_breached`."),
        Column(
            "first_response_business_p50",
            "double",
            "Median `first_response_business_seconds` of the day's answered threads.",
        ),
        Column(
            "first_response_business_p90",
            "double",
            "90th percentile (interpolated) of `first_response_business_seconds`.",
        ),
    ),
    select="""
with dated as (
    select coalesce({local_day:first_customer_message_at},
                    cast(first_customer_message_at at time zone 'UTC' as date)) as day,
           metrics.*
    from {conversation_metrics} as metrics
    where first_response_known and first_customer_message_at is not null
)
select day, page_id, platform,
       count(*) as threads,
       count(first_page_reply_at) as answered,
       count(*) filter (where first_response_breached) as first_response_breaches,
       count(*) filter (where resolution_breached) as resolution_breaches,
       percentile_cont(0.5) within group (order by first_response_business_seconds)
           as first_response_business_p50,
       percentile_cont(0.9) within group (order by first_response_business_seconds)
           as first_response_business_p90
from dated
group by day, page_id, platform
""",
)

DAILY_VOLUME = MetricView(
    name="daily_volume",
    description="Messages per UTC day, Page, platform and direction, every message counted "
    "(only days with messages have rows).",
    columns=(
        Column("day", "date", "The UTC day the messages were sent."),
        PAGE_ID,
        PLATFORM,
        Column(
            "direction",
            "text",
            "`inbound` (from a customer), `outbound` (from the Page) or `unknown` (no details).",
        ),
        Column("messages", "bigint", "Messages sent that day."),
    ),
    select="""
with sent as (
    select cast(created_time at time zone 'UTC' as date) as day,
           page_id,
           platform,
           case
               when not details_available then 'unknown'
               when is_from_page then 'outbound'
               else 'inbound'
           end as direction
    from {messages}
    where deleted_at is null
)
select day, page_id, platform, direction, count(*) as messages
from sent
group by day, page_id, platform, direction
""",
)

EXPIRED_ATTACHMENT_URLS = MetricView(
    name="expired_attachment_urls",
    description="Attachments of live messages whose CDN URL has expired (Meta signs its URLs "
    "with an expiry): re-read their messages (`--reconcile`, or the recheck window for recent "
    "threads) for fresh ones, or fetch files before their URLs expire.",
    columns=(
        Column("message_id", "text", "The message (`messages.id`)."),
        Column("position", "bigint", "Order within the message, from 0."),
        CONVERSATION_ID,
        PAGE_ID,
        Column("type", "text", "`message_attachments.type`."),
        Column("url", "text", "The expired URL."),
        Column("url_expires_at", "timestamp", "When it expired (UTC)."),
    ),
    select="""
select attachments.message_id, attachments.position, attachments.conversation_id,
       attachments.page_id, attachments.type, attachments.url, attachments.url_expires_at
from {message_attachments} as attachments
join {messages} as messages on messages.id = attachments.message_id
where messages.deleted_at is null and attachments.url_expires_at < current_timestamp
""",
)


@dataclass(frozen=True)
class SettingsTable:
    """A table the views read, written from the settings with them."""

    name: str
    description: str
    columns: tuple[Column, ...]


BUSINESS_CLOCK = SettingsTable(
    name="business_clock",
    description="The `business_hours` schedule as data: time cut into open and closed "
    "stretches, each within one UTC day and one local day, from the UTC day of the oldest "
    "message to a year after the views were written (empty without `business_hours`). The "
    "business seconds between two instants are the difference of their readings: "
    "`open_seconds_before`, plus the time since `starts_at` if `is_open`, of the stretch "
    "holding each.",
    columns=(
        Column("utc_day", "date", "The UTC day of the stretch."),
        Column("local_day", "date", "Its day in the `business_hours` timezone."),
        Column("starts_at", "timestamp", "Where it starts (UTC), inclusive."),
        Column("ends_at", "timestamp", "Where it ends (UTC), exclusive."),
        Column("is_open", "bool", "Within business hours."),
        Column(
            "open_seconds_before",
            "bigint",
            "Business seconds from the first stretch's start to `starts_at`.",
        ),
    ),
)
SLA_TARGETS = SettingsTable(
    name="sla_targets",
    description="One row: the `first_response_sla` and `resolution_sla` settings.",
    columns=(
        Column("first_response_sla_seconds", "double", "`first_response_sla` in business seconds."),
        Column("resolution_sla_seconds", "double", "`resolution_sla` in business seconds."),
    ),
)
SETTINGS_TABLES = (BUSINESS_CLOCK, SLA_TARGETS)
# Views after the views they read: created in this order, dropped in reverse.
METRIC_VIEWS: tuple[MetricView, ...] = (
    RESPONSE_TIMES,
    CONVERSATION_METRICS,
    SLA_DAILY,
    DAILY_VOLUME,
    EXPIRED_ATTACHMENT_URLS,
)
# The tables the views read.
VIEW_TABLES = ("messages", "conversations", "conversation_history", "message_attachments")
# Serializes view changes of concurrent pipelines on Postgres (a constant of our own).
_VIEWS_LOCK = 7_210_422_019
# The clock reaches this far past the newest message, or now: how long views stay exact for
# threads still waiting without being written again.
CLOCK_AHEAD = timedelta(days=366)
# The oldest and newest message: the span the clock covers.
SPAN_SQL = "select min(created_time), max(created_time) from {messages}"
_SQL_TYPES = {
    "date": "date",
    "timestamp": "timestamp with time zone",
    "bool": "boolean",
    "bigint": "bigint",
    "double": "double precision",
}
_ROWS_PER_INSERT = 1000


class _AtInstant:
    """`{clock:X}` or `{local_day:X}` in a view's SQL: the business clock's `reading` at the
    instant X, read from the one stretch that holds it (null outside the clock's span)."""

    def __init__(self, clock: str, reading: str) -> None:
        self.clock = clock
        self.reading = reading

    def __format__(self, instant: str) -> str:
        return (
            f"(select {self.reading.replace('@', instant)} from {self.clock} as stretch "
            f"where stretch.utc_day = cast({instant} at time zone 'UTC' as date) "
            f"and stretch.starts_at <= {instant} and stretch.ends_at > {instant})"
        )


class _Unread:
    """`{clock:X}` or `{local_day:X}` without business hours: null, of the reading's type."""

    def __init__(self, sql_type: str) -> None:
        self.sql_type = sql_type

    def __format__(self, instant: str) -> str:
        return f"cast(null as {self.sql_type})"


def relation_names(qualified: Any) -> dict[str, Any]:
    """What the views' SQL names, each replaced by `qualified(name)`, and the clock readers."""
    names: dict[str, Any] = {
        name: qualified(name)
        for name in (
            *VIEW_TABLES,
            *(table.name for table in SETTINGS_TABLES),
            *(view.name for view in METRIC_VIEWS),
        )
    }
    clock = names[BUSINESS_CLOCK.name]
    names["clock"] = _AtInstant(
        clock,
        "cast(stretch.open_seconds_before + case when stretch.is_open "
        "then extract(epoch from @ - stretch.starts_at) else 0 end as double precision)",
    )
    names["local_day"] = _AtInstant(clock, "stretch.local_day")
    return names


def view_sql(view: MetricView, names: dict[str, Any]) -> str:
    """The view's select, reading the relations named in `names` (see `relation_names`)."""
    return view.select.format(**names, answers=_ANSWERS.format(**names))


def settings_tables_sql(
    names: dict[str, Any],
    analysis: Analysis,
    oldest: datetime | None,
    newest: datetime | None,
    now: datetime | None = None,
) -> list[str]:
    """Statements that write `business_clock` and `sla_targets` afresh, for data from
    `oldest` to `newest` (the messages' span, None when there are none)."""
    schedule = analysis.schedule()
    first_response, resolution = analysis.sla_seconds()
    statements = [f"drop table if exists {names[table.name]}" for table in SETTINGS_TABLES]
    for table in SETTINGS_TABLES:
        columns = ", ".join(f"{c.name} {_SQL_TYPES[c.data_type]}" for c in table.columns)
        statements.append(f"create table {names[table.name]} ({columns})")
    statements.append(
        f"insert into {names[SLA_TARGETS.name]} "
        f"values ({_literal(first_response)}, {_literal(resolution)})"
    )
    if schedule is not None:
        now = now or datetime.now(UTC)
        first = _utc(oldest or now).date()
        last = (max(_utc(newest or now), now) + CLOCK_AHEAD).date()
        rows = [
            f"({_literal(r.utc_day)}, {_literal(r.local_day)}, {_literal(r.starts_at)}, "
            f"{_literal(r.ends_at)}, {_literal(r.is_open)}, {r.open_seconds_before})"
            for r in clock_rows(schedule, first, last)
        ]
        statements += [
            f"insert into {names[BUSINESS_CLOCK.name]} values "
            + ", ".join(rows[start : start + _ROWS_PER_INSERT])
            for start in range(0, len(rows), _ROWS_PER_INSERT)
        ]
    # Views read the clock by UTC day and start: an index keeps that a lookup on Postgres.
    statements.append(
        f"create index {BUSINESS_CLOCK.name}_lookup on {names[BUSINESS_CLOCK.name]} "
        "(utc_day, starts_at)"
    )
    return statements


def metric_statements(
    names: dict[str, Any],
    analysis: Analysis,
    oldest: datetime | None = None,
    newest: datetime | None = None,
    create: str = "create view",
) -> list[str]:
    """Statements writing the settings tables, then creating the views (`create`: the verb)."""
    statements = settings_tables_sql(names, analysis, oldest, newest)
    if analysis.schedule() is None:
        # The clock is empty: every reading is null, which the views then say without looking
        # each instant up (measured: a tenth of `response_times` at a million messages).
        names = names | {"clock": _Unread("double precision"), "local_day": _Unread("date")}
    return statements + [
        f"{create} {names[view.name]} as {view_sql(view, names)}" for view in METRIC_VIEWS
    ]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, float | int):
        return repr(value)
    return f"'{value.isoformat()}'"


def ensure_metric_views(pipeline: dlt.Pipeline, analysis: Analysis | None = None) -> list[str]:
    """Create or replace the metric views, and the tables they read from the settings
    (`analysis`, default: from the configuration), in the pipeline's dataset; their names, in
    order.

    Returns [] where views cannot live or run: a lake (its views are `lake.write_views`'),
    an engine of another SQL dialect, or a dataset without its tables yet.
    Several pipelines loading one dataset may run this at once: Postgres serializes them.
    """
    if not speaks_sql(pipeline):
        return []
    analysis = analysis or Analysis.from_config()
    with pipeline.sql_client() as client:
        if not _has_tables(client):
            return []
        names = relation_names(client.make_qualified_table_name)
        with client.begin_transaction():
            if on_postgres(pipeline):
                client.execute_sql(f"select pg_advisory_xact_lock({_VIEWS_LOCK})")
            # Dropping first lets a column change its type, which CREATE OR REPLACE refuses on
            # Postgres; one transaction keeps readers from seeing the views missing.
            for view in reversed(METRIC_VIEWS):
                client.execute_sql(f"drop view if exists {names[view.name]}")
            span = client.execute_sql(SPAN_SQL.format(**names))
            for statement in metric_statements(names, analysis, *(span[0] if span else ())):
                client.execute_sql(statement)
    return [view.name for view in METRIC_VIEWS]


def _has_tables(client: SqlClientBase[Any]) -> bool:
    if not client.has_dataset():
        return False
    schema = client.make_qualified_table_name_path(None, quote=False)[-1]
    placeholders = ", ".join(["%s"] * len(VIEW_TABLES))
    rows = client.execute_sql(
        "select count(*) from information_schema.tables "
        f"where table_schema = %s and table_name in ({placeholders})",
        schema,
        *VIEW_TABLES,
    )
    return rows is not None and rows[0][0] == len(VIEW_TABLES)


def metrics_markdown() -> str:
    """The docs' section on the metric views and the tables they read from the settings,
    generated so that it cannot drift from the SQL."""
    sections = [markdown_section(v.name, v.description, v.columns) for v in METRIC_VIEWS]
    sections += [markdown_section(t.name, t.description, t.columns) for t in SETTINGS_TABLES]
    return "\n".join(sections)
