"""Airflow 2 DAG (2.4 or newer): every hour, export each Facebook Page with `meta-inbox run`.

Copy into your DAGs folder and list your Page ids in PAGE_IDS. The workers need meta-inbox
installed (`pip install "meta-inbox[postgres]"`) and, in their environment,
SOURCES__META_INBOX__ACCESS_TOKEN and DESTINATION__POSTGRES__CREDENTIALS (BashOperator passes the
worker's environment on). Workers keep no state between runs: dlt restores each pipeline's
incremental state from PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

# A constant rather than an Airflow Variable read here: the scheduler parses this file every
# few seconds, and a Variable read at parse time is a metadata database query each time.
PAGE_IDS = ["111111111111111", "222222222222222"]

with DAG(
    dag_id="meta_inbox",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    # Each run fetches everything new since the last one: past hours have nothing left to load.
    catchup=False,
    max_active_runs=1,
    # The Pages share one dataset, and dlt truncates its staging tables when a load starts: two
    # loads at once could wipe each other's rows before merging them. The tasks stay
    # independent (one Page failing does not hold back the others) but run one at a time.
    max_active_tasks=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["meta-inbox"],
) as dag:
    for page_id in PAGE_IDS:
        # One pipeline per Page: each keeps its own incremental state, loaded into one dataset.
        BashOperator(
            task_id=f"export_page_{page_id}",
            bash_command=(
                f"meta-inbox run --destination postgres --page-id {page_id} "
                f"--pipeline-name meta_inbox_{page_id}"
            ),
        )
