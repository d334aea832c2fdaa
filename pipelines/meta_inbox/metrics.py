"""Inbox metrics: SQL views over the loaded tables, defined once for DuckDB and PostgreSQL.

Each view is data (its SQL and a description of every column), read by `create_metric_views`,
the docs (`metrics_markdown`) and the tests. The SQL keeps to what both engines share.

Only messages with details count as sent by a customer or by the Page: Instagram hides the
sender of messages older than a thread's newest 20. Graph gives times to the second and no order
within a second, so a Page message sent in the same second as a customer's does not count as its
answer: every answer is strictly later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dlt
from dlt.destinations.sql_client import SqlClientBase

from .destinations import speaks_sql
from .tables import CONVERSATION_ID, FOLDER, PAGE_ID, PLATFORM, Column, markdown_section


@dataclass(frozen=True)
class MetricView:
    """A view over the dataset. `select` names relations as `{messages}`, `{conversations}` or
    another view's `{name}`, replaced by their qualified names on creation."""

    name: str
    description: str
    columns: tuple[Column, ...]
    select: str


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
    ),
    select="""
with detailed as (
    select id, conversation_id, page_id, platform, created_time, is_from_page
    from {messages}
    where details_available and deleted_at is null
),
answered as (
    -- Newest first, customers before the Page within a second: the rows before a customer
    -- message are exactly the later ones (and same-second customer messages). A frame growing
    -- from the partition's start keeps this one pass per thread, also on Postgres.
    select detailed.*,
           min(case when is_from_page then created_time end) over (
               partition by conversation_id
               order by created_time desc, is_from_page
               rows between unbounded preceding and 1 preceding
           ) as reply_at
    from detailed
),
page_seconds as (
    -- "C": byte order, the same in both engines whatever the database's collation.
    select conversation_id, created_time, min(id collate "C") as id
    from detailed
    where is_from_page
    group by conversation_id, created_time
)
select answered.conversation_id,
       answered.page_id,
       answered.platform,
       answered.id as customer_message_id,
       answered.created_time as customer_message_at,
       page_seconds.id as reply_message_id,
       answered.reply_at,
       cast(extract(epoch from answered.reply_at - answered.created_time) as double precision)
           as response_seconds
from answered
join page_seconds
  on page_seconds.conversation_id = answered.conversation_id
 and page_seconds.created_time = answered.reply_at
where not answered.is_from_page
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
        Column("first_customer_message_at", "timestamp", "The customer's first message (UTC)."),
        Column(
            "first_page_reply_at",
            "timestamp",
            "The Page's first message strictly after the customer's first message (UTC).",
        ),
        Column(
            "first_response_seconds",
            "double",
            "`first_page_reply_at - first_customer_message_at` in seconds.",
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
responses as (
    -- The first customer message's answer is the earliest answer of the thread.
    select conversation_id,
           min(reply_at) as first_page_reply_at,
           percentile_cont(0.5) within group (order by response_seconds)
               as median_response_seconds
    from {response_times}
    group by conversation_id
),
threads as (
    select conversations.id as conversation_id,
           conversations.page_id,
           conversations.platform,
           conversations.folder,
           sides.first_customer_message_at,
           responses.first_page_reply_at,
           cast(extract(epoch from responses.first_page_reply_at
                                   - sides.first_customer_message_at) as double precision)
               as first_response_seconds,
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
)
select threads.*,
       coalesce(last_message_from = 'customer', false) as is_unanswered,
       coalesce(last_message_from = 'customer', false) and folder in ('inbox', 'other')
           as is_open
from threads
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

# Views after the views they read: created in this order, dropped in reverse.
METRIC_VIEWS: tuple[MetricView, ...] = (
    RESPONSE_TIMES,
    CONVERSATION_METRICS,
    DAILY_VOLUME,
    EXPIRED_ATTACHMENT_URLS,
)
# The tables the views read.
VIEW_TABLES = ("messages", "conversations", "conversation_history", "message_attachments")
# Serializes view changes of concurrent pipelines on Postgres (a constant of our own).
_VIEWS_LOCK = 7_210_422_019


def view_sql(view: MetricView, names: dict[str, str]) -> str:
    """The view's select, reading the relations named in `names` (table or view → its name)."""
    return view.select.format(**names)


def ensure_metric_views(pipeline: dlt.Pipeline) -> list[str]:
    """Create or replace the metric views in the pipeline's dataset; their names, in order.

    Returns [] where views cannot live or run: a lake (its views are `lake.write_views`'),
    an engine of another SQL dialect, or a dataset without its tables yet.
    Several pipelines loading one dataset may run this at once: Postgres serializes them.
    """
    if not speaks_sql(pipeline):
        return []
    with pipeline.sql_client() as client:
        if not _has_tables(client):
            return []
        names = {name: client.make_qualified_table_name(name) for name in VIEW_TABLES}
        names |= {view.name: client.make_qualified_table_name(view.name) for view in METRIC_VIEWS}
        statements = []
        if pipeline.destination.capabilities().sqlglot_dialect == "postgres":
            statements.append(f"select pg_advisory_xact_lock({_VIEWS_LOCK})")
        # Dropping first lets a column change its type, which CREATE OR REPLACE refuses on
        # Postgres; one transaction keeps readers from seeing the views missing.
        statements += [f"drop view if exists {names[v.name]}" for v in reversed(METRIC_VIEWS)]
        statements += [
            f"create view {names[view.name]} as {view_sql(view, names)}" for view in METRIC_VIEWS
        ]
        with client.begin_transaction():
            for statement in statements:
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
    """The docs' section on the metric views, generated so that it cannot drift from the SQL."""
    return "\n".join(markdown_section(v.name, v.description, v.columns) for v in METRIC_VIEWS)
