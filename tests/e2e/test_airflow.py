"""The Airflow DAG of deploy/ on a real Airflow, in a virtualenv of its own (`.venv-airflow/`,
built once with Airflow and meta-inbox, rebuilt when missing or when AIRFLOW changes).

The DAG parses without errors, and runs against the emulator and a real PostgreSQL with
LocalExecutor: `dag.test()` alone runs the tasks one at a time, and an executor is what runs the
mapped Page tasks side by side. Airflow 3's LocalExecutor needs no server database (its tasks
report to the execution API, started here), so the metadata stays in SQLite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_scale_out import (
    DATASET,
    PAGES,
    counts_by_page,
    duplicate_keys,
    expected_by_page,
    page_ids,
    pipeline_of,
    postgres,
    views,
)

from meta_inbox import Settings, pages
from meta_inbox.emulator import Emulator
from meta_inbox.metrics import METRIC_VIEWS

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "deploy" / "airflow_dag.py"
VENV = ROOT / ".venv-airflow"
# Installs from PyPI in about two minutes here (Python 3.11), without Airflow's constraints
# files, which are out of reach.
AIRFLOW = "apache-airflow>=3.1,<3.4"
INSTALL_TIMEOUT = 900
# Logical dates of the DAG runs: an hour of a Monday, and Sunday's 03:00 hour (the reconcile).
HOURLY = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
WEEKLY = datetime(2026, 1, 4, 3, 30, tzinfo=UTC)

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 600)

# Run by the Python of the Airflow virtualenv: `parse DAGS` prints the DAG's shape, `test DAGS
# LOGICAL_DATE` runs the DAG with the configured executor; either prints one RESULT line.
IN_AIRFLOW = """
import json, sys
from datetime import datetime

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag

command, folder, *when = sys.argv[1:]
bag = DagBag(dag_folder=folder)
dag = bag.dags.get("meta_inbox")
if command == "parse":
    result = {
        "import_errors": {str(path): str(error) for path, error in bag.import_errors.items()},
        "tasks": {
            task.task_id: {
                "mapped": bool(getattr(task, "is_mapped", False)),
                "trigger_rule": str(getattr(task.trigger_rule, "value", task.trigger_rule)),
                "upstream": sorted(task.upstream_task_ids),
            }
            for task in (dag.tasks if dag else [])
        },
    }
else:
    from airflow.executors.local_executor import LocalExecutor

    # LocalExecutor.end sends a None to each worker it finds alive, one after another; an idle
    # worker that takes a None sent for another and exits before it is looked at leaves that
    # other waiting for ever, and end() joins it for ever (Airflow 3.3.2, seen here). A None per
    # worker first: what end() adds to them is never read.
    shut_down = LocalExecutor.end

    def end(self):
        for _ in self.workers:
            self.activity_queue.put(None)
        shut_down(self)

    LocalExecutor.end = end
    run = dag.test(use_executor=True, logical_date=datetime.fromisoformat(when[0]))
    result = {
        "state": str(run.state),
        "task_instances": sorted(
            [ti.task_id, ti.map_index, str(ti.state)] for ti in run.get_task_instances()
        ),
    }
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    """The Python of the Airflow virtualenv, built first when needed."""
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    # meta-inbox is installed editable: its code follows the checkout, but what pip made of
    # pyproject.toml (the `meta-inbox` script's entry point, the dependencies) does not.
    built = f"{AIRFLOW}\n{hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()}"
    if marker.exists() and marker.read_text() == built:
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", AIRFLOW, "-e", f"{ROOT}[postgres]"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    if install.returncode != 0:
        pytest.fail(f"cannot install {AIRFLOW}:\n{install.stderr[-3000:]}", pytrace=False)
    # Written last: an interrupted build is built again.
    marker.write_text(built)
    return python


class Airflow:
    """An Airflow home in a temporary folder (SQLite metadata) whose DAGs folder holds a copy of
    the DAG, and the environment of its commands and tasks."""

    def __init__(self, python: Path, home: Path) -> None:
        self.python = python
        self.home = home
        self.dags = home / "dags"
        self.dags.mkdir(parents=True)
        shutil.copy(DAG_FILE, self.dags)
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
            # `meta-inbox` in the tasks' commands is the one installed beside Airflow.
            "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # LocalExecutor starts this many worker processes: every Page at once, no more.
            "AIRFLOW__CORE__PARALLELISM": str(PAGES),
            "AIRFLOW__API_AUTH__JWT_SECRET": "meta-inbox-tests-" + "0" * 64,
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "DLT_DATA_DIR": str(home / "dlt"),
        }

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python.parent / "airflow"), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self, command: str, *args: str) -> subprocess.Popen[str]:
        """IN_AIRFLOW's `command` in the background."""
        return subprocess.Popen(
            [str(self.python), "-c", IN_AIRFLOW, command, str(self.dags), *args],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def result(self, command: str, *args: str) -> dict[str, Any]:
        output, _ = self.start(command, *args).communicate(timeout=600)
        return result_of(output)

    @contextmanager
    def execution_api(self) -> Iterator[None]:
        """Airflow 3's execution API, which LocalExecutor's tasks report to."""
        port = _free_port()
        self.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
        with (self.home / "api-server.log").open("w") as log:
            server = subprocess.Popen(
                [str(self.python.parent / "airflow"), "api-server", "--apps", "execution",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                env=self.env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                _wait_until_serving(server, f"http://127.0.0.1:{port}/execution/health")
                yield
            finally:
                server.terminate()
                server.wait(timeout=60)


def result_of(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-5000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def _free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_serving(server: subprocess.Popen[str], url: str) -> None:
    """A precondition, polled: the server answers (whatever its status)."""
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            raise AssertionError(f"the Airflow API server exited with {server.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("the Airflow API server never answered") from None
            time.sleep(0.5)


@pytest.fixture
def airflow(airflow_python: Path, tmp_path: Path) -> Airflow:
    airflow = Airflow(airflow_python, tmp_path / "airflow")
    migrated = airflow.command("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return airflow


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=7, scale=1, pages=PAGES) as emu:
        yield emu


def test_the_dag_parses_into_a_fan_out_over_pages(airflow: Airflow) -> None:
    result = airflow.result("parse")

    assert result["import_errors"] == {}
    assert result["tasks"] == {
        "list_pages": {"mapped": False, "trigger_rule": "all_success", "upstream": []},
        "export_page": {"mapped": True, "trigger_rule": "all_success", "upstream": ["list_pages"]},
        "refresh_views": {
            "mapped": False,
            "trigger_rule": "all_done",
            "upstream": ["export_page"],
        },
        "page_failed": {"mapped": False, "trigger_rule": "one_failed", "upstream": ["export_page"]},
    }


def test_the_dag_exports_every_page_in_parallel_then_the_views(
    airflow: Airflow, emulator: Emulator, postgres_dsn: str
) -> None:
    # What `meta-inbox pages` asks Graph, so that the gate below lets exactly that through.
    pages(Settings.from_config(access_token=emulator.user_token, base_url=emulator.base_url))
    listing_calls = len(emulator.calls)
    emulator.reset_calls()
    airflow.env |= {
        "SOURCES__META_INBOX__ACCESS_TOKEN": emulator.user_token,
        "SOURCES__META_INBOX__BASE_URL": emulator.base_url,
        "SOURCES__META_INBOX__MAX_CALLS_PER_SECOND": "0",
        # One call at a time per run: calls held at once are runs going on at once.
        "SOURCES__META_INBOX__MAX_CONCURRENCY": "1",
        "DESTINATION__POSTGRES__CREDENTIALS": postgres_dsn,
    }
    with airflow.execution_api():
        # The Page list goes through; then every Page task's first call waits at the gate.
        emulator.hold_after(listing_calls)
        hourly = airflow.start("test", HOURLY.isoformat())
        try:
            side_by_side = emulator.wait_until_held(PAGES, timeout=300)
        finally:
            emulator.release()
        hourly_run = result_of(hourly.communicate(timeout=600)[0])
        weekly_run = airflow.result("test", WEEKLY.isoformat())

    assert side_by_side, "the Page tasks never ran all at once"
    for run in (hourly_run, weekly_run):
        assert run["state"] == "success"
        assert run["task_instances"] == [
            *(["export_page", index, "success"] for index in range(PAGES)),
            ["list_pages", -1, "success"],
            ["page_failed", -1, "skipped"],
            ["refresh_views", -1, "success"],
        ]
    query = postgres(postgres_dsn)
    ids = page_ids(emulator)
    assert counts_by_page(query, ids) == expected_by_page(emulator, ids)
    assert not any(duplicate_keys(query).values()), duplicate_keys(query)
    assert {view.name for view in METRIC_VIEWS} <= views(query)
    modes = query(
        f"select pipeline_name, mode, status from {DATASET}._meta_inbox_runs order by started_at"
    )
    assert sorted(modes) == sorted(
        (pipeline_of(page), mode, "success") for page in ids for mode in ("regular", "reconcile")
    )
