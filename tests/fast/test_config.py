"""`Settings`: what each setting accepts, where values come from, and the generated docs."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meta_inbox.config import Settings, config_toml, settings_markdown
from meta_inbox.errors import BadInput

pytest_plugins = ["support"]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "EAAG-test-token"
MISSING_TOKEN = (
    "No access token: set SOURCES__META_INBOX__ACCESS_TOKEN or access_token under "
    "[sources.meta_inbox] in .dlt/secrets.toml."
)
NO_SALT = (
    "pii = hash needs a secret salt: set pii_salt (SOURCES__META_INBOX__PII_SALT or "
    ".dlt/secrets.toml)."
)


@pytest.fixture(autouse=True)
def only_what_the_test_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No project `.dlt` folder and no SOURCES__ variables from outside the test."""
    monkeypatch.chdir(tmp_path)
    for name in os.environ:
        if name.startswith("SOURCES__"):
            monkeypatch.delenv(name)


def settings(**values: Any) -> Settings:
    return Settings.from_config(**({"access_token": TOKEN} | values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"platforms": ["whatsapp"]},
            "platforms (--platform) 'whatsapp' is unknown: use messenger, instagram.",
        ),
        (
            {"folders": ["inbox", "archive"]},
            "folders (--folder) 'archive' is unknown: use inbox, other, page_done, spam, "
            "archived_legacy.",
        ),
        ({"pii": "mask"}, "pii 'mask' is unknown: use keep, hash, drop."),
        ({"access_token": "  "}, MISSING_TOKEN),
        (
            {"page_ids": ["1000000000000001", "cafe-ole"]},
            "page_ids (--page-id) 'cafe-ole' is not a Page id: Page ids are digits only.",
        ),
        (
            {"start_date": "yesterday"},
            "start_date (--since) 'yesterday' is not a date: use YYYY-MM-DD or an ISO 8601 time.",
        ),
        ({"pii": "hash"}, NO_SALT),
        ({"pii": "hash", "pii_salt": " "}, NO_SALT),
        ({"base_url": "ftp://graph"}, "base_url 'ftp://graph' is not an http(s) URL."),
        ({"page_size": 0}, "page_size must be between 1 and 100."),
        ({"page_size": 101}, "page_size must be between 1 and 100."),
        ({"messages_page_size": 101}, "messages_page_size must be between 1 and 100."),
        ({"attachments_page_size": 0}, "attachments_page_size must be between 1 and 100."),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1."),
        ({"max_attempts": 0}, "max_attempts must be at least 1."),
        ({"checkpoint_threads": 0}, "checkpoint_threads must be at least 1."),
        ({"lookback_seconds": -1}, "lookback_seconds must not be negative."),
        ({"recheck_window_days": -0.5}, "recheck_window_days must not be negative."),
        ({"max_calls_per_second": -1.0}, "max_calls_per_second must not be negative."),
        ({"max_throttle_wait": -1.0}, "max_throttle_wait must not be negative."),
        ({"checkpoint_seconds": -1.0}, "checkpoint_seconds must not be negative."),
        (
            {"duckdb_memory_limit": "lots"},
            "duckdb_memory_limit 'lots' is not a size: write it as DuckDB does, e.g. 96MB or 1GB.",
        ),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else ""
    ),
)
def test_each_rule_refuses_what_cannot_work(values: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput) as raised:
        settings(**values)
    assert str(raised.value) == message


def test_the_bounds_of_each_rule_are_accepted() -> None:
    accepted = settings(
        page_size=1,
        messages_page_size=100,
        attachments_page_size=100,
        max_concurrency=1,
        max_attempts=1,
        checkpoint_threads=1,
        lookback_seconds=0,
        recheck_window_days=0.0,
        max_calls_per_second=0.0,
        max_throttle_wait=0.0,
        checkpoint_seconds=0.0,
        base_url="http://127.0.0.1:8765",
        pii="hash",
        pii_salt="pepper",
    )
    assert (accepted.page_size, accepted.messages_page_size, accepted.pii) == (1, 100, "hash")


def test_choices_are_read_loosely_and_kept_once() -> None:
    chosen = settings(platforms=[" Instagram", "MESSENGER", "instagram"], folders=[], pii=" Drop ")
    assert chosen.platforms == ["instagram", "messenger"]
    assert chosen.folders == [
        "inbox",
        "other",
        "page_done",
        "spam",
        "archived_legacy",
    ]  # none chosen: all
    assert chosen.pii == "drop"


def test_page_ids_are_kept_as_text() -> None:
    assert settings(page_ids=[1000000000000001]).page_ids == ["1000000000000001"]


@pytest.mark.usefixtures("local_time_far_from_utc")
@pytest.mark.parametrize(
    ("start_date", "stored", "start"),
    [
        ("2025-01-01", "2025-01-01T00:00:00+00:00", datetime(2025, 1, 1, tzinfo=UTC)),
        (
            "2025-01-01T10:30:00",
            "2025-01-01T10:30:00+00:00",
            datetime(2025, 1, 1, 10, 30, tzinfo=UTC),
        ),
        (
            "2025-01-01T10:30:00+02:00",
            "2025-01-01T08:30:00+00:00",
            datetime(2025, 1, 1, 8, 30, tzinfo=UTC),
        ),
    ],
)
def test_start_date_without_an_offset_is_utc(start_date: str, stored: str, start: datetime) -> None:
    chosen = settings(start_date=start_date)
    assert (chosen.start_date, chosen.start) == (stored, start)


def test_without_a_token_the_input_is_bad() -> None:
    with pytest.raises(BadInput) as raised:
        Settings.from_config()
    assert str(raised.value) == MISSING_TOKEN


def test_settings_come_from_the_environment_and_overrides_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCES__META_INBOX__ACCESS_TOKEN", "EAAG-from-env")
    monkeypatch.setenv("SOURCES__META_INBOX__PAGE_SIZE", "10")
    monkeypatch.setenv("SOURCES__META_INBOX__MESSAGES_PAGE_SIZE", "30")
    monkeypatch.setenv("SOURCES__META_INBOX__PLATFORMS", '["instagram"]')

    chosen = Settings.from_config(page_size=20, platforms=None)

    # None is "not given" (an unset CLI option): the environment's value stays.
    assert (chosen.access_token, chosen.page_size, chosen.messages_page_size) == (
        "EAAG-from-env",
        20,
        30,
    )
    assert chosen.platforms == ["instagram"]


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown settings: pagesize"):
        settings(pagesize=10)


@pytest.mark.parametrize(
    ("name", "value"), [("PAGE_SIZE", "ten"), ("MAX_CALLS_PER_SECOND", "fast"), ("PAGE_IDS", "[")]
)
def test_a_value_of_the_wrong_type_is_bad_input(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """README: exit 2 for bad input, "fix the argument or config named in the line"."""
    monkeypatch.setenv(f"SOURCES__META_INBOX__{name}", value)
    with pytest.raises(BadInput, match=name.lower()):
        settings()


# -- generated docs: they must not drift from the definitions -----------------------------------


def test_the_readme_configuration_table_is_generated_from_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- config:start -->\n(.*?)<!-- config:end -->", readme, re.S)
    assert section, "README lacks <!-- config:start --> ... <!-- config:end -->"
    assert section.group(1).strip() == settings_markdown().strip(), (
        "README configuration table is stale: paste the output of `meta-inbox config`"
    )


def test_dlt_config_toml_is_generated_from_settings() -> None:
    assert (ROOT / ".dlt" / "config.toml").read_text(encoding="utf-8") == config_toml(), (
        ".dlt/config.toml is stale: meta-inbox config --toml > .dlt/config.toml"
    )
