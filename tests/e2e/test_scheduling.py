"""The scheduling templates in deploy/ run on the documented schedule, with arguments the real
CLI accepts. The Airflow DAG is read as a syntax tree here, without Airflow; tests/e2e/
test_airflow.py runs it on a real Airflow."""

from __future__ import annotations

import argparse
import ast
import itertools
import shlex
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from meta_inbox import Settings
from meta_inbox.cli import _listed_ids, _parser
from meta_inbox.errors import BadInput

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHELL_OPERATORS = {">", ">>", "2>&1", "&&", "||", "|", ";"}
HOURLY = ["*", "*", "*", "*"]  # hour, day of month, month, day of week
SUNDAYS = ["*", "*", "0"]  # day of month, month, day of week

T = TypeVar("T")


def test_crontab_runs_hourly_and_reconciles_weekly_from_the_project_folder() -> None:
    lines = [
        line
        for line in (DEPLOY / "cron.example").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    assert len(lines) == 2, lines
    (hourly, hourly_command), (weekly, weekly_command) = [
        (schedule, shlex.split(command))
        for *schedule, command in (line.split(maxsplit=5) for line in lines)
    ]
    assert int(hourly[0]) in range(60)
    assert hourly[1:] == HOURLY
    assert int(weekly[0]) in range(60)
    assert int(weekly[1]) in range(24)
    assert weekly[2:] == SUNDAYS
    for words in (hourly_command, weekly_command):
        assert words[0] == "cd", "the job runs from the project folder, where .dlt/ is"
        assert words[2] == "&&"
        assert words[words.index(">>") + 1].endswith(".log")
        assert words[-1] == "2>&1"
    assert hourly_command[1] == weekly_command[1]
    # One lock: an hour still running must not overlap (skipped), the week's reconcile waits.
    assert hourly_command[hourly_command.index("flock") + 1] == "-n"
    assert weekly_command[weekly_command.index("flock") + 1] == "run.lock"
    assert hourly_command[hourly_command.index("-n") + 1] == "run.lock"
    assert not parse_run(run_args(hourly_command)).reconcile
    assert parse_run(run_args(weekly_command)).reconcile


def test_github_workflow_runs_hourly_reconciles_weekly_and_on_demand_into_postgres() -> None:
    workflow = yaml.safe_load((DEPLOY / "github-actions.yml").read_text(encoding="utf-8"))

    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true.
    triggers = workflow[True]
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    hourly, weekly = (schedule["cron"] for schedule in triggers["schedule"])
    minute, *rest = hourly.split()
    assert int(minute) in range(60)
    assert rest == HOURLY
    assert weekly.split()[2:] == SUNDAYS
    assert triggers["workflow_dispatch"]["inputs"]["reconcile"]["type"] == "boolean"

    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    python = only([s for s in steps if s.get("uses", "").startswith("actions/setup-python@")])
    assert python["with"]["python-version"] == "3.11"
    install = only([step for step in steps if "pip install" in step.get("run", "")])
    assert shlex.split(install["run"])[-1] in {".[postgres]", "meta-inbox[postgres]"}

    export = only([step for step in steps if "meta-inbox run" in step.get("run", "")])
    env = export["env"]
    assert env["SOURCES__META_INBOX__ACCESS_TOKEN"] == "${{ secrets.META_INBOX_ACCESS_TOKEN }}"
    assert env["DESTINATION__POSTGRES__CREDENTIALS"].startswith("${{ secrets.")
    # MODE is --reconcile on the weekly schedule (or when asked for), else empty.
    assert f"github.event.schedule == '{weekly}'" in env["MODE"]
    assert "inputs.reconcile" in env["MODE"]
    for mode in ("", "--reconcile"):
        command = shlex.split(export["run"].replace("$MODE", mode))
        args = parse_run(run_args(command))
        assert args.destination == "postgres"
        assert args.reconcile == bool(mode)


def test_airflow_dag_fans_out_one_pipeline_per_page_then_refreshes_the_views() -> None:
    tree = ast.parse((DEPLOY / "airflow_dag.py").read_text(encoding="utf-8"))

    imported = imported_names(tree)
    assert ("airflow.sdk", "DAG") in imported, "Airflow 3"
    assert ("airflow.providers.standard.operators.bash", "BashOperator") in imported
    assert ("airflow.decorators", "task") in imported, "Airflow 2.4+"
    assert ("airflow.operators.bash", "BashOperator") in imported
    dag = keywords(only(calls(tree, "DAG")))
    assert ast.literal_eval(dag["schedule"]) == "@hourly"
    assert ast.literal_eval(dag["max_active_runs"]) == 1, "two runs would load one Page twice"
    assert "max_active_tasks" not in dag, "Page tasks run in parallel"

    # The mapped task: `meta-inbox run` for the Page in $PAGE_ID, weekly with --reconcile.
    partial = keywords(only([c for c in calls(tree, "partial") if "bash_command" in keywords(c)]))
    assert ast.unparse(partial["max_active_tis_per_dag"]) == "MAX_PARALLEL_PAGES"
    assert ast.unparse(partial["pool"]) == "POOL"
    assert ast.literal_eval(partial["append_env"]) is True, "the worker's token and credentials"
    mode = ast.literal_eval(assigned(tree, "MODE"))
    assert "'--reconcile'" in mode
    assert "params.reconcile" in mode
    for page_id, rendered_mode in (("111111111111111", ""), ("222222222222222", "--reconcile")):
        command = render(partial["bash_command"], {"MODE": rendered_mode})
        words = [word.replace("$PAGE_ID", page_id) for word in shlex.split(command)]
        args = parse_run(run_args(words))
        assert args.page_ids == [page_id]
        assert args.pipeline_name == f"meta_inbox_{page_id}", "one pipeline (state) per Page"
        assert args.destination == "postgres", "workers keep no local DuckDB file"
        assert args.no_views, "the views are refreshed once, after every Page"
        assert args.reconcile == bool(rendered_mode)
    page_env = only([f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                     and f.name == "page_env"])  # fmt: skip
    assert "PAGE_ID" in ast.unparse(page_env)

    views = keywords(
        only([c for c in calls(tree, "BashOperator") if "bash_command" in keywords(c)])
    )
    assert shlex.split(ast.literal_eval(views["bash_command"])) == [
        "meta-inbox", "views", "--destination", "postgres"
    ]  # fmt: skip
    assert ast.literal_eval(views["trigger_rule"]) == "all_done", "also after failed Pages"


def run_args(words: list[str]) -> list[str]:
    """The arguments after `meta-inbox run` in a shell command, up to the next operator."""
    start = only(
        [
            i
            for i, (word, following) in enumerate(itertools.pairwise(words))
            if Path(word).name == "meta-inbox" and following == "run"
        ]
    )
    return list(itertools.takewhile(lambda word: word not in SHELL_OPERATORS, words[start + 2 :]))


def parse_run(args: list[str]) -> argparse.Namespace:
    """`meta-inbox run ARGS` through the real parser and the checks made before any call."""
    try:
        namespace = _parser().parse_args(["run", *args])
        Settings.from_config(
            access_token="token",
            page_ids=_listed_ids(namespace.page_ids),
            platforms=namespace.platforms,
            folders=namespace.folders,
            start_date=namespace.since,
        )
    except (SystemExit, BadInput) as error:
        pytest.fail(f"the CLI refuses `meta-inbox run {shlex.join(args)}`: {error}")
    return namespace


def only(items: list[T]) -> T:
    assert len(items) == 1, items
    return items[0]


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls of `name`, or of a method `name` (`BashOperator.partial(...)`)."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {keyword.arg: keyword.value for keyword in call.keywords if keyword.arg}


def imported_names(tree: ast.AST) -> set[tuple[str, str]]:
    return {
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def assigned(tree: ast.Module, name: str) -> ast.expr:
    return only(
        [
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == [name]
        ]
    )


def render(node: ast.expr, names: dict[str, str]) -> str:
    """A string or f-string of the DAG file with its names bound, without running the file."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    assert isinstance(node, ast.JoinedStr), ast.dump(node)
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
        else:
            assert isinstance(value, ast.FormattedValue)
            assert isinstance(value.value, ast.Name)
            parts.append(names[value.value.id])
    return "".join(parts)
