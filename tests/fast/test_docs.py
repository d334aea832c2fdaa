"""The README documents every table and column, from the definitions the code uses."""

from __future__ import annotations

import re
from pathlib import Path

from meta_inbox.metrics import metrics_markdown
from meta_inbox.tables import RUNS, TABLES, markdown_section, schema_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_schema_is_generated_from_the_table_definitions() -> None:
    section = re.search(r"<!-- schema:start -->\n(.*?)<!-- schema:end -->", README, re.S)
    assert section, "README lacks the generated schema section"
    assert section.group(1).strip() == schema_markdown().strip(), (
        "README schema is stale: paste the output of `meta-inbox schema`"
    )
    for table in TABLES:
        for column in table.columns:
            assert f"| `{column.name}` |" in section.group(1)


def test_readme_documents_every_metric_view() -> None:
    section = re.search(r"<!-- metrics:start -->\n(.*?)<!-- metrics:end -->", README, re.S)
    assert section, "README lacks the generated metric views section"
    assert section.group(1).strip() == metrics_markdown().strip()


def test_readme_documents_the_run_records() -> None:
    section = re.search(r"<!-- runs:start -->\n(.*?)<!-- runs:end -->", README, re.S)
    assert section, "README lacks the generated run records section"
    expected = markdown_section(RUNS.name, RUNS.description, RUNS.columns)
    assert section.group(1).strip() == expected.strip()


def test_readme_starts_with_the_two_commands() -> None:
    first_commands = re.findall(r"^make (\w+)$", README, re.M)[:2]
    assert first_commands == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M)
    assert re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
