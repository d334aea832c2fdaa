"""Airflow DAG (Airflow 2.4+ and 3): every hour, export every Facebook Page the token reads, one
pipeline per Page, the Pages in parallel; then refresh the metric views once.

Copy into your DAGs folder. The workers need meta-inbox installed (`pip install
"meta-inbox[postgres]"`) and, in their environment, SOURCES__META_INBOX__ACCESS_TOKEN and
DESTINATION__POSTGRES__CREDENTIALS (the tasks pass the worker's environment on). Workers keep
no state between runs: dlt restores each Page pipeline's incremental state from PostgreSQL.

1. `list_pages` asks `meta-inbox pages --json` which Pages the token reads (a Page granted
   later is exported from the next run on; set page_ids in the configuration to pick some).
2. `export_page`, mapped over the Page ids (dynamic task mapping): `meta-inbox run --page-id ID
   --pipeline-name meta_inbox_ID --destination postgres --no-views`. Each Page has its own
   pipeline, so its own incremental state; its task retries on its own, and a failing Page does
   not hold back the others. Up to MAX_PARALLEL_PAGES run at once, each taking a slot of POOL.
3. `refresh_views`: `meta-inbox views --destination postgres`, once, after every Page task has
   ended, failed ones included.
4. `page_failed` fails the DAG run when a Page failed (the views task succeeding would otherwise
   leave the run green).

Sunday's 03:00 UTC run also reconciles (`--reconcile`: every thread read again, what Graph no
longer returns marked deleted); so does a run triggered with the configuration
`{"reconcile": true}`. Being runs of this DAG, with max_active_runs=1, they never overlap an
hourly run of the same Page: two loads of one Page at once could duplicate its rows.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.4 to 2.11
    from airflow import DAG
    from airflow.decorators import task
    from airflow.operators.bash import BashOperator

# Pages loading at the same time. Each holds one PostgreSQL connection while it loads (two
# while it creates tables) and makes at most max_concurrency Graph calls at once.
MAX_PARALLEL_PAGES = 4
# The pool whose slots the Page tasks take. To cap meta-inbox across DAGs and runs, create one,
# e.g. `airflow pools set meta_inbox 4 "meta-inbox Page exports"`, and name it here.
POOL = "default_pool"
# Rendered per task: the weekly reconcile (data_interval_start is UTC).
MODE = (
    "{{ '--reconcile' if params.reconcile or (data_interval_start is not none and "
    "data_interval_start.strftime('%a %H') == 'Sun 03') else '' }}"
)


def page_env(page_id: str) -> dict[str, str]:
    """What the Page's export task adds to the worker's environment."""
    return {"PAGE_ID": page_id}


with DAG(
    dag_id="meta_inbox",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    # Each run fetches everything new since the last one: past hours have nothing left to load.
    catchup=False,
    # Runs queue instead of overlapping: two runs would load the same Page at once.
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    params={"reconcile": False},
    tags=["meta-inbox"],
) as dag:

    @task(retries=2, retry_delay=timedelta(minutes=2))
    def list_pages() -> list[str]:
        """The ids of the Pages the token reads."""
        listed = subprocess.run(
            ["meta-inbox", "pages", "--json"], capture_output=True, text=True, check=False
        )
        if listed.returncode != 0:
            # meta-inbox says what went wrong in one line: make it the task's error.
            raise RuntimeError(listed.stderr.strip() or f"exit code {listed.returncode}")
        return [json.loads(line)["id"] for line in listed.stdout.splitlines() if line.strip()]

    exports = BashOperator.partial(
        task_id="export_page",
        bash_command=(
            'meta-inbox run --destination postgres --page-id "$PAGE_ID" '
            f'--pipeline-name "meta_inbox_$PAGE_ID" --no-views {MODE}'
        ),
        # The worker's environment (token, credentials) plus PAGE_ID.
        append_env=True,
        pool=POOL,
        max_active_tis_per_dag=MAX_PARALLEL_PAGES,
    ).expand(env=list_pages().map(page_env))

    views = BashOperator(
        task_id="refresh_views",
        bash_command="meta-inbox views --destination postgres",
        trigger_rule="all_done",
    )

    @task(trigger_rule="one_failed", retries=0)
    def page_failed() -> None:
        raise RuntimeError("a Page's export failed: see its export_page task")

    exports >> [views, page_failed()]
