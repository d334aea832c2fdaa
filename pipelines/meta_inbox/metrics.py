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
from dlt.destinations.impl.duckdb.sql_client import WithTableScanners
from dlt.destinations.sql_client import SqlClientBase

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
    where details_available
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
    group by conversation_id
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
)
select day, page_id, platform, direction, count(*) as messages
from sent
group by day, page_id, platform, direction
""",
)

# Views after the views they read: created in this order, dropped in reverse.
METRIC_VIEWS: tuple[MetricView, ...] = (RESPONSE_TIMES, CONVERSATION_METRICS, DAILY_VOLUME)
_TABLES = ("messages", "conversations")
# Engines whose SQL the views are written in (MotherDuck included: it reports DuckDB's).
_DIALECTS = ("duckdb", "postgres")


def create_metric_views(pipeline: dlt.Pipeline) -> list[str]:
    """Create or replace the metric views in the pipeline's dataset; their names, in order.

    Returns [] where views cannot live or run: a filesystem lake, an engine of another SQL
    dialect, or a dataset without its tables yet.
    """
    client = _sql_client(pipeline)
    if client is None:
        return []
    with client:
        if not _has_tables(client):
            return []
        names = {name: client.make_qualified_table_name(name) for name in _TABLES}
        names |= {view.name: client.make_qualified_table_name(view.name) for view in METRIC_VIEWS}
        # Dropping first lets a column change its type, which CREATE OR REPLACE refuses on
        # Postgres; one transaction keeps readers from seeing the views missing.
        creates = [
            f"create view {names[view.name]} as {view.select.format(**names)}"
            for view in METRIC_VIEWS
        ]
        _execute(client, [*_drops(client), *creates])
    return [view.name for view in METRIC_VIEWS]


def drop_metric_views(pipeline: dlt.Pipeline) -> list[str]:
    """Drop the metric views where they exist; their names ([] where views are not made).

    Postgres refuses to drop a table that a view reads, so a run that drops the tables
    (`--full-refresh`) must drop the views first.
    """
    client = _sql_client(pipeline)
    if client is None:
        return []
    with client:
        if not client.has_dataset():
            return []
        _execute(client, _drops(client))
    return [view.name for view in reversed(METRIC_VIEWS)]


def _sql_client(pipeline: dlt.Pipeline) -> SqlClientBase[Any] | None:
    if pipeline.destination.capabilities().sqlglot_dialect not in _DIALECTS:
        return None
    client = pipeline.sql_client()
    # A lake's SQL client is an in-memory DuckDB over its files: views made there vanish with it.
    return None if isinstance(client, WithTableScanners) else client


def _has_tables(client: SqlClientBase[Any]) -> bool:
    if not client.has_dataset():
        return False
    schema = client.make_qualified_table_name_path(None, quote=False)[-1]
    rows = client.execute_sql(
        "select count(*) from information_schema.tables "
        "where table_schema = %s and table_name in (%s, %s)",
        schema,
        *_TABLES,
    )
    return rows is not None and rows[0][0] == len(_TABLES)


def _drops(client: SqlClientBase[Any]) -> list[str]:
    return [
        f"drop view if exists {client.make_qualified_table_name(view.name)}"
        for view in reversed(METRIC_VIEWS)
    ]


def _execute(client: SqlClientBase[Any], statements: list[str]) -> None:
    with client.begin_transaction():
        client.execute_sql(";\n".join(statements))


def metrics_markdown() -> str:
    """The docs' section on the metric views, generated so that it cannot drift from the SQL."""
    return "\n".join(markdown_section(v.name, v.description, v.columns) for v in METRIC_VIEWS)
