"""The tables meta-inbox loads: one definition per table, read by the source, docs and tests.

`meta-inbox schema` prints the README's schema section from these definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import pyarrow as pa

# What a personal column holds: "person" (a name, email or username: hashed by `pii = hash`) or
# "text" (what people wrote: kept by `pii = hash`). `pii = drop` leaves out both.
PiiKind = Literal["person", "text"]

_PII_NOTES: dict[PiiKind, str] = {
    "person": "Personal: hashed with `pii = hash`, left out with `pii = drop`.",
    "text": "Personal: left out with `pii = drop`.",
}
_ARROW_TYPES = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "bool": pa.bool_(),
    "double": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),  # JSON text; the column's dlt type makes it JSON in the destination
}


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    description: str
    nullable: bool = True
    pii: PiiKind | None = None

    @property
    def documented(self) -> str:
        """The description, with what the `pii` setting does to this column."""
        if self.pii is None:
            return self.description
        return f"{self.description} {_PII_NOTES[self.pii]}"


@dataclass(frozen=True)
class Table:
    """A destination table, merged on `primary_key` (or appended, without one).

    A child table also names its parent's key as `merge_key`: a re-fetched parent replaces all
    its child rows, so none goes stale. Its own primary key matters too: a load keeps one row
    per key, and a load job replayed after a crash would otherwise insert twice. Into DuckDB,
    `duckdb_merge` merges each file on both keys itself. Where dlt merges, it deletes by the
    parent key alone (a `destination_scope`): with both keys dlt matches destination rows on
    either, which DuckDB plans as a join holding every key of the destination table in memory,
    where a lookup of the load's parent keys holds only those.
    `insert_only` tables keep the first row of each key: they record what was observed first.
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    merge_key: str | None = None
    insert_only: bool = False
    page_column: str = "page_id"  # the Facebook Page a row belongs to (per-Page refresh)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def personal_columns(self) -> dict[str, PiiKind]:
        """Names of the columns that hold personal data, and what they hold."""
        return {c.name: c.pii for c in self.columns if c.pii}

    def stored_columns(self, pii: str = "keep") -> tuple[Column, ...]:
        """The columns the destination gets: `pii = drop` leaves the personal ones out."""
        return tuple(c for c in self.columns if pii != "drop" or c.pii is None)

    @property
    def parent(self) -> str | None:
        """The table whose rows own this one's, by `merge_key`."""
        return {"conversation_id": "conversations", "message_id": "messages"}.get(
            self.merge_key or ""
        )

    @property
    def write_disposition(self) -> Any:
        if not self.primary_key:
            return "append"
        if self.insert_only:
            return {"disposition": "merge", "strategy": "insert-only"}
        if self.merge_key:
            key = self.merge_key
            return {
                "disposition": "merge",
                "strategy": "delete-insert",
                "destination_scope": f"{key} in (select {key} from {{staging_table}})",
            }
        return "merge"

    def dlt_columns(self, pii: str = "keep") -> dict[str, dict[str, Any]]:
        columns: dict[str, dict[str, Any]] = {}
        for column in self.stored_columns(pii):
            hints: dict[str, Any] = {
                "name": column.name,
                "data_type": column.data_type,
                "nullable": column.nullable,
                "description": column.description,
            }
            if column.data_type == "timestamp":
                hints["timezone"] = True
            if column.name == self.merge_key:
                # Datasets of earlier versions hold dlt's merge_key hint here, which dlt would
                # ignore next to the destination scope with a warning on every load.
                hints["merge_key"] = False
            columns[column.name] = hints
        return columns

    def arrow_schema(self, pii: str = "keep") -> pa.Schema:
        return pa.schema(
            [
                pa.field(c.name, _ARROW_TYPES[c.data_type], nullable=c.nullable)
                for c in self.stored_columns(pii)
            ]
        )


def _person(prefix: str, who: str) -> tuple[Column, ...]:
    described = (
        ("name", f"Name of {who} (Messenger only)."),
        ("email", f"Page-scoped email of {who} (Messenger only)."),
        ("username", f"Instagram username of {who} (Instagram only)."),
    )
    return tuple(Column(prefix + name, "text", text, pii="person") for name, text in described)


# Columns that several tables and the metric views share.
PAGE_ID = Column("page_id", "text", "Facebook Page the conversation belongs to.", nullable=False)
PLATFORM = Column("platform", "text", "`messenger` or `instagram`.", nullable=False)
FOLDER = Column(
    "folder",
    "text",
    "`inbox`, `other`, `page_done` (archived), `spam`, or `archived_legacy` (Messenger threads "
    "archived before mid-2018, which Graph lists by the tag `action:archived`).",
    nullable=False,
)
CONVERSATION_ID = Column(
    "conversation_id", "text", "The conversation (`conversations.id`).", nullable=False
)
DELETED_AT = Column(
    "deleted_at",
    "timestamp",
    "When `meta-inbox run --reconcile` found it gone from Graph (UTC); null while it exists.",
)
_MESSAGE_ID = Column("message_id", "text", "The message (`messages.id`).", nullable=False)
_POSITION = Column("position", "bigint", "Order within the message, from 0.", nullable=False)
_EXPIRES = "(UTC), from the signed URL's `oe`; null when the URL carries none."

PAGES = Table(
    name="pages",
    description="One row per Facebook Page exported, as of its latest run.",
    primary_key=("id",),
    page_column="id",
    columns=(
        Column("id", "text", "Page id (`conversations.page_id`).", nullable=False),
        Column("name", "text", "Page name."),
        Column(
            "instagram_id",
            "text",
            "Its linked Instagram professional account: the sender and participant id of the "
            "Page on Instagram.",
        ),
        Column("instagram_username", "text", "That account's username."),
        Column("platforms", "json", 'Platforms read in the latest run, e.g. `["messenger"]`.'),
        Column(
            "login",
            "text",
            "How it was read: `facebook_page` (a Page token, or a user token's Pages), or "
            "`instagram_login` (a professional Instagram account without a Page, read with an "
            "Instagram User token from `instagram_base_url`; `id` and `instagram_id` are then "
            "its Instagram `user_id`, `name` its username).",
        ),
        Column("exported_at", "timestamp", "When the latest run read it (UTC).", nullable=False),
    ),
)

CONVERSATIONS = Table(
    name="conversations",
    description="One row per thread, as of its latest load.",
    primary_key=("id",),
    columns=(
        Column("id", "text", "Conversation id (`t_…` on Messenger).", nullable=False),
        PAGE_ID,
        PLATFORM,
        FOLDER,
        Column("updated_time", "timestamp", "Time of the newest message (UTC)."),
        Column("message_count", "bigint", "Messages in the thread, as Graph counts them."),
        Column("unread_count", "bigint", "Messages the Page has not read."),
        Column("snippet", "text", "Text of the newest message, shortened by Graph.", pii="text"),
        Column("link", "text", "Path of the thread in the Page inbox (Messenger)."),
        Column("can_reply", "bool", "Whether the Page can still reply."),
        Column("is_subscribed", "bool", "Whether the Page is subscribed to the thread."),
        Column("name", "text", "Thread name, when it has one."),
        Column("subject", "text", "Thread subject, when it has one."),
        Column("scoped_thread_key", "text", "Page-scoped thread key (Messenger)."),
        Column("participant_count", "bigint", "Rows in `conversation_participants`."),
        Column(
            "is_owner",
            "bool",
            "Whether this app owns the thread (Conversation Routing, handover); null where "
            "Graph does not say, or refuses the field for the Page.",
        ),
        DELETED_AT,
    ),
)

CONVERSATION_PARTICIPANTS = Table(
    name="conversation_participants",
    description="One row per person (or Page) per conversation, current and former.",
    primary_key=("conversation_id", "participant_id"),
    merge_key="conversation_id",
    columns=(
        CONVERSATION_ID,
        Column("participant_id", "text", "Page-scoped or Instagram-scoped id.", nullable=False),
        *_person("", "the participant"),
        Column("is_sender", "bool", "Listed among the thread's `senders`."),
        Column("is_former", "bool", "Listed only among `former_participants`."),
        Column(
            "is_page",
            "bool",
            "The Page itself (or its Instagram account); null on Instagram when Graph did not "
            "say which account is linked.",
        ),
        PAGE_ID,
        PLATFORM,
    ),
)

CONVERSATION_HISTORY = Table(
    name="conversation_history",
    description="One row each time a run found a thread in a state (folder, unread count, "
    "reply permission, message count) it had not been seen in before: when threads are "
    "archived, read, reopened or grow. Observed by runs, so times are as precise as the runs "
    "are frequent.",
    primary_key=("conversation_id", "observed_state"),
    insert_only=True,
    columns=(
        CONVERSATION_ID,
        Column(
            "observed_state",
            "text",
            "The four values as one key, e.g. `page_done|0|true|17`.",
            nullable=False,
        ),
        Column("observed_at", "timestamp", "When the run that first saw it started (UTC).", False),
        FOLDER,
        Column("unread_count", "bigint", "`conversations.unread_count` then."),
        Column("can_reply", "bool", "`conversations.can_reply` then."),
        Column("message_count", "bigint", "`conversations.message_count` then."),
        PAGE_ID,
        PLATFORM,
    ),
)

# The column of `messages` that the load adds: see `source._Shaper`.
ROWS_HASH = "rows_hash"

MESSAGES = Table(
    name="messages",
    description="One row per message. Instagram withholds details beyond the newest 20 messages "
    "of a thread: those rows have `details_available = false` and only ids and times.",
    primary_key=("id",),
    columns=(
        Column("id", "text", "Message id (`m_…` on Messenger).", nullable=False),
        CONVERSATION_ID,
        PAGE_ID,
        PLATFORM,
        Column("created_time", "timestamp", "When the message was sent (UTC).", nullable=False),
        Column("from_id", "text", "Sender id: a person, the Page or its Instagram account."),
        *_person("from_", "the sender"),
        Column("is_from_page", "bool", "Sent by the Page (or its Instagram account)."),
        Column("message", "text", "Text; empty when the message has none.", pii="text"),
        Column("sticker", "text", "Sticker image URL (expires)."),
        Column("sticker_expires_at", "timestamp", f"When `sticker` stops working {_EXPIRES}"),
        Column("is_unsupported", "bool", "The message holds content Graph cannot show."),
        Column("reply_to_mid", "text", "Id of the message this one replies to."),
        Column("reply_to_is_self_reply", "bool", "The reply is to the sender's own message."),
        Column("story_type", "text", "`reply_to` or `mention` when the message is about a story."),
        Column("story_id", "text", "Id of that story."),
        Column("story_link", "text", "CDN link of that story (expires)."),
        Column("story_link_expires_at", "timestamp", f"When `story_link` stops working {_EXPIRES}"),
        Column("attachment_count", "bigint", "Rows in `message_attachments`."),
        Column("reaction_count", "bigint", "Rows in `message_reactions`."),
        Column(
            "details_available",
            "bool",
            "False where Graph withholds the details (Instagram, older than the newest 20).",
            nullable=False,
        ),
        DELETED_AT,
        Column(
            ROWS_HASH,
            "bigint",
            "A fingerprint of what the message's rows are made from (Graph's message, its "
            "thread, the meta-inbox version and the `pii` setting), kept once a run reads the "
            "message again: a later run that finds it the same does not load the message or its "
            "children again. Null for a message loaded once.",
        ),
    ),
)

MESSAGE_ATTACHMENTS = Table(
    name="message_attachments",
    description="Files, images, videos, audio clips and templates attached to messages.",
    primary_key=("message_id", "position"),
    merge_key="message_id",
    columns=(
        _MESSAGE_ID,
        _POSITION,
        Column("attachment_id", "text", "Attachment id."),
        CONVERSATION_ID,
        PAGE_ID,
        Column(
            "type",
            "text",
            "`image`, `animated_image` (GIF), `sticker`, `video`, `audio`, `file`, `template` or "
            "`unknown`.",
            nullable=False,
        ),
        Column("mime_type", "text", "MIME type."),
        Column("name", "text", "File name."),
        Column("size", "bigint", "Size in bytes."),
        Column(
            "url",
            "text",
            "The attachment's own CDN URL (expires): the image, video or file URL, or the "
            "template's media.",
        ),
        Column("url_expires_at", "timestamp", f"When `url` stops working {_EXPIRES}"),
        Column("file_url", "text", "CDN URL of a file or audio attachment (expires)."),
        Column("image_url", "text", "`image_data.url` (expires)."),
        Column("image_preview_url", "text", "`image_data.preview_url`."),
        Column("image_width", "bigint", "`image_data.width` in pixels."),
        Column("image_height", "bigint", "`image_data.height` in pixels."),
        Column("image_max_width", "bigint", "`image_data.max_width`."),
        Column("image_max_height", "bigint", "`image_data.max_height`."),
        Column("image_type", "bigint", "`image_data.image_type`."),
        Column("image_render_as_sticker", "bool", "`image_data.render_as_sticker`."),
        Column("image_animated_gif_url", "text", "`image_data.animated_gif_url`."),
        Column("image_animated_gif_preview_url", "text", "`image_data.animated_gif_preview_url`."),
        Column("video_url", "text", "`video_data.url` (expires)."),
        Column("video_preview_url", "text", "`video_data.preview_url`."),
        Column("video_width", "bigint", "`video_data.width`."),
        Column("video_height", "bigint", "`video_data.height`."),
        Column("video_length", "double", "`video_data.length` in seconds."),
        Column("video_type", "bigint", "`video_data.video_type`."),
        Column("video_rotation", "bigint", "`video_data.rotation`."),
        Column("generic_template", "json", "`generic_template` as JSON (cta, media_url, …)."),
    ),
)

MESSAGE_REACTIONS = Table(
    name="message_reactions",
    description="One row per reaction per user.",
    primary_key=("message_id", "position"),
    merge_key="message_id",
    columns=(
        _MESSAGE_ID,
        _POSITION,
        Column("reaction", "text", "The emoji.", nullable=False),
        Column("user_id", "text", "Who reacted."),
        Column("user_name", "text", "Their name (Messenger only).", pii="person"),
        Column("user_username", "text", "Their Instagram username (Instagram only).", pii="person"),
        CONVERSATION_ID,
        PAGE_ID,
    ),
)

MESSAGE_RECIPIENTS = Table(
    name="message_recipients",
    description="One row per recipient (`to`) per message.",
    primary_key=("message_id", "recipient_id"),
    merge_key="message_id",
    columns=(
        _MESSAGE_ID,
        Column("recipient_id", "text", "Recipient id.", nullable=False),
        *_person("", "the recipient"),
        CONVERSATION_ID,
        PAGE_ID,
    ),
)

MESSAGE_TAGS = Table(
    name="message_tags",
    description="One row per tag per message (`inbox`, `read`, `sent`, `source:…`).",
    primary_key=("message_id", "tag"),
    merge_key="message_id",
    columns=(
        _MESSAGE_ID,
        Column("tag", "text", "Tag name.", nullable=False),
        CONVERSATION_ID,
        PAGE_ID,
    ),
)

MESSAGE_SHARES = Table(
    name="message_shares",
    description="Posts, products and media shared in messages (Instagram gives only `link`).",
    primary_key=("message_id", "position"),
    merge_key="message_id",
    columns=(
        _MESSAGE_ID,
        _POSITION,
        Column("share_id", "text", "Id of the shared object."),
        Column("link", "text", "Link of the shared object."),
        Column("name", "text", "Its name."),
        Column("description", "text", "Its description."),
        Column("template", "json", "Product template payload as JSON."),
        CONVERSATION_ID,
        PAGE_ID,
    ),
)

REFRESHES = Table(
    name="_meta_inbox_refreshes",
    description="One row per Page that `--full-refresh` reloaded: rows of that Page loaded "
    "before this row's load are gone (deleted in SQL destinations, hidden by the lake views).",
    columns=(
        PAGE_ID,
        Column("pipeline_name", "text", "The pipeline that asked for it.", nullable=False),
        Column("requested_at", "timestamp", "When (UTC).", nullable=False),
        Column("applied_at", "timestamp", "When older rows were deleted (SQL destinations)."),
    ),
)

ERASURES = Table(
    name="_meta_inbox_erasures",
    description="One row per thread `meta-inbox forget` erased: no run builds a row of it "
    "from what was sent up to `erased_at`. Written by `forget`, never loaded by a run; holds "
    "no personal data.",
    columns=(
        Column("conversation_id", "text", "The erased thread.", nullable=False),
        Column("page_id", "text", "Its Page.", nullable=False),
        Column("platform", "text", "`messenger` or `instagram`.", nullable=False),
        Column("erased_at", "timestamp", "When (UTC): the cut-off.", nullable=False),
    ),
)

RUNS = Table(
    name="_meta_inbox_runs",
    description="One row per run of `meta-inbox run` (or `meta_inbox.export()`), whatever its "
    "outcome, written with its last load.",
    primary_key=("run_id",),
    columns=(
        Column("run_id", "text", "Unique id of the run.", nullable=False),
        Column("pipeline_name", "text", "The dlt pipeline (`--pipeline-name`)."),
        Column("started_at", "timestamp", "When the run started (UTC).", nullable=False),
        Column("finished_at", "timestamp", "When it ended (UTC).", nullable=False),
        Column(
            "status",
            "text",
            "`success`; `partial` (some Pages failed); `stopped` (throttle ceiling or Graph "
            "unavailable), `interrupted` (SIGINT or SIGTERM): what was read is loaded; or "
            "`failed` (nothing more loaded).",
            nullable=False,
        ),
        Column("exit_code", "bigint", "The CLI's exit code (README, When things go wrong)."),
        Column("error", "text", "The line printed for each problem, if any."),
        Column("mode", "text", "`regular`, `reconcile` or `full-refresh`."),
        Column("pages", "json", "Ids of the Pages read."),
        Column("api_calls", "bigint", "Graph API calls made, retries included."),
        Column("retries", "bigint", "Calls retried after a transient fault."),
        Column("throttled", "bigint", "Throttle errors waited out."),
        Column("throttle_wait_seconds", "double", "Time spent waiting on throttling."),
        Column("checkpoints", "bigint", "Loads the run made (one per checkpoint)."),
        Column(
            "new_messages", "bigint", "Messages loaded that the destination did not hold before."
        ),
        Column(
            "threads_with_new_messages", "bigint", "Threads that brought at least one new message."
        ),
        Column(
            "messages",
            "bigint",
            "Messages read: new ones, those merged again and those found unchanged.",
        ),
        Column(
            "rechecked_threads",
            "bigint",
            "Threads read again without a new message: the recheck window's and the lookback's "
            "(reactions, edits, read state, moves).",
        ),
        Column(
            "messages_merged_again",
            "bigint",
            "Messages loaded that the destination held already, merged again.",
        ),
        Column(
            "unchanged_messages",
            "bigint",
            "Messages read again and found as stored, with their children's rows "
            "(`messages.rows_hash`): not loaded again.",
        ),
        Column(
            "messages_without_details", "bigint", "Messages loaded without details (Instagram)."
        ),
        Column(
            "repaired_values",
            "bigint",
            "Text values holding what no destination stores (lone surrogates, NUL), replaced "
            "with U+FFFD.",
        ),
        Column("marked_deleted", "bigint", "Rows `--reconcile` marked with `deleted_at`."),
        Column(
            "skipped_threads",
            "bigint",
            "Threads Graph stopped answering for while the run read them (deleted meanwhile, or "
            "an error meta-inbox does not know): what was read of them is loaded.",
        ),
        Column(
            "skipped_messages",
            "bigint",
            "Messages whose attachments Graph stopped answering for: loaded with those read.",
        ),
        Column(
            "skipped",
            "json",
            "Each skip (at most 100): Page, platform, thread, message and Graph's answer.",
        ),
        Column("rows", "json", "Rows written per table."),
        Column("meta_inbox_version", "text", "The meta-inbox version that ran."),
    ),
)

# A message's table and its children's: what `rows.MessageRows` makes.
MESSAGE_TABLES: tuple[Table, ...] = (
    MESSAGES,
    MESSAGE_ATTACHMENTS,
    MESSAGE_REACTIONS,
    MESSAGE_RECIPIENTS,
    MESSAGE_TAGS,
    MESSAGE_SHARES,
)
# The exported tables, parents before children.
TABLES: tuple[Table, ...] = (
    PAGES,
    CONVERSATIONS,
    CONVERSATION_PARTICIPANTS,
    CONVERSATION_HISTORY,
    *MESSAGE_TABLES,
)


def schema_markdown() -> str:
    """The README's schema section, generated so that the docs cannot drift from the code."""
    sections = []
    for table in TABLES:
        key = "primary key " + ", ".join(f"`{column}`" for column in table.primary_key)
        if table.merge_key:
            key += f"; rows replaced per `{table.merge_key}`"
        if table.insert_only:
            key += "; a key's first row is kept"
        sections.append(markdown_section(table.name, f"{table.description} ({key})", table.columns))
    return "\n".join(sections)


def markdown_section(name: str, description: str, columns: tuple[Column, ...]) -> str:
    """One table or view for the README: its name, what it holds, and a row per column."""
    lines = [f"#### `{name}`", "", description, ""]
    lines += ["| column | type | description |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.data_type} | {c.documented} |" for c in columns]
    return "\n".join(lines) + "\n"
