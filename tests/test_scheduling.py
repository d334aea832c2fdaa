"""The scheduling templates in deploy/ run on the documented schedule, with arguments the real
CLI accepts. The Airflow DAG is read as a syntax tree: Airflow is not installed here."""

from __future__ import annotations

import argparse
import ast
import itertools
import shlex
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from meta_inbox.cli import _parser, _validated_overrides
from meta_inbox.errors import BadInput

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SHELL_OPERATORS = {">", ">>", "2>&1", "&&", "||", "|", ";"}
HOURLY = ["*", "*", "*", "*"]  # hour, day of month, month, day of week

T = TypeVar("T")


def test_crontab_runs_hourly_from_the_project_folder() -> None:
    lines = [
        line
        for line in (DEPLOY / "cron.example").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    assert len(lines) == 1, lines
    *schedule, command = lines[0].split(maxsplit=5)
    assert int(schedule[0]) in range(60)
    assert schedule[1:] == HOURLY
    words = shlex.split(command)
    assert words[0] == "cd", "the job runs from the project folder, where .dlt/ is"
    assert words[2] == "&&"
    assert words[words.index("flock") + 1] == "-n", "an hour still running must not overlap"
    assert words[words.index(">>") + 1].endswith(".log")
    assert words[-1] == "2>&1"
    parse_run(run_args(words))


def test_github_workflow_runs_hourly_and_on_demand_into_postgres() -> None:
    workflow = yaml.safe_load((DEPLOY / "github-actions.yml").read_text(encoding="utf-8"))

    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true.
    triggers = workflow[True]
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    [schedule] = triggers["schedule"]
    minute, *rest = schedule["cron"].split()
    assert int(minute) in range(60)
    assert rest == HOURLY

    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    python = only([s for s in steps if s.get("uses", "").startswith("actions/setup-python@")])
    assert python["with"]["python-version"] == "3.11"
    install = only([step for step in steps if "pip install" in step.get("run", "")])
    assert shlex.split(install["run"])[-1] in {".[postgres]", "meta-inbox[postgres]"}

    export = only([step for step in steps if "meta-inbox run" in step.get("run", "")])
    assert parse_run(run_args(shlex.split(export["run"]))).destination == "postgres"
    env = export["env"]
    assert env["SOURCES__META_INBOX__ACCESS_TOKEN"] == "${{ secrets.META_INBOX_ACCESS_TOKEN }}"
    assert env["DESTINATION__POSTGRES__CREDENTIALS"].startswith("${{ secrets.")


def test_airflow_dag_runs_one_independent_pipeline_per_page() -> None:
    tree = ast.parse((DEPLOY / "airflow_dag.py").read_text(encoding="utf-8"))

    assert ("airflow.operators.bash", "BashOperator") in imported_names(tree)
    dag = keywords(only(calls(tree, "DAG")))
    assert ast.literal_eval(dag["schedule"]) == "@hourly"
    page_ids = ast.literal_eval(assigned(tree, "PAGE_IDS"))
    assert page_ids, "the DAG needs at least one Page id to show the pattern"

    loop = only(
        [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.For) and ast.unparse(node.iter) == "PAGE_IDS"
        ]
    )
    assert isinstance(loop.target, ast.Name)
    operator = keywords(only(calls(loop, "BashOperator")))
    task_ids = set()
    for page_id in page_ids:
        bound = {loop.target.id: page_id}
        args = parse_run(run_args(shlex.split(render(operator["bash_command"], bound))))
        assert args.page_ids == [page_id]
        assert args.pipeline_name == f"meta_inbox_{page_id}", "one pipeline (state) per Page"
        assert args.destination == "postgres", "workers keep no local DuckDB file"
        task_ids.add(render(operator["task_id"], bound))
    assert len(task_ids) == len(page_ids)
    assert not dependencies(tree), "a Page's task must not wait for another Page's"


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
        _validated_overrides(namespace)
    except (SystemExit, BadInput) as error:
        pytest.fail(f"the CLI refuses `meta-inbox run {shlex.join(args)}`: {error}")
    return namespace


def only(items: list[T]) -> T:
    assert len(items) == 1, items
    return items[0]


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
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


def dependencies(tree: ast.AST) -> list[ast.AST]:
    """Task dependencies in any of Airflow's spellings: >>, <<, set_*stream, chain()."""
    return [
        node
        for node in ast.walk(tree)
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift | ast.LShift))
        or (isinstance(node, ast.Attribute) and node.attr in {"set_upstream", "set_downstream"})
        or (isinstance(node, ast.Name) and node.id in {"chain", "cross_downstream"})
    ]
