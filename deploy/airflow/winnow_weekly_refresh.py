"""Weekly winnow refresh on Dataflow, as an Airflow DAG (apache-airflow-providers-google and -cncf-kubernetes).

1. ``launch``: start the Flex Template (``deploy/flex-template``), which fingerprints the inputs,
   stages version N's pending input list and submits the Dataflow job; the operator waits for
   the job to succeed.
2. ``finalize``: run ``winnow refresh --finalize-only`` in the same image: it checks the
   accounting invariant, moves the staged shards into ``vNNNN/``, writes the report, card and
   manifest, and commits the state. If it is interrupted, clearing and rerunning the task is safe.

``max_active_runs=1``: the state dir on GCS has no lock, so runs must never overlap. A failed
``launch`` leaves nothing committed; the next run redoes the version.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

PROJECT = "my-project"
REGION = "europe-west4"
BUCKET = "my-bucket"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/winnow/winnow:0.1.0"
ARGS = {
    "config": f"gs://{BUCKET}/winnow/config.yaml",
    "state": f"gs://{BUCKET}/winnow/state",
    "output": f"gs://{BUCKET}/winnow/corpus",
}

with DAG(
    dag_id="winnow_weekly_refresh",
    schedule="0 3 * * 1",  # Mondays 03:00, after the weekly crawl has landed
    start_date=datetime(2026, 1, 5),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=15)},
    tags=["winnow"],
) as dag:
    launch = DataflowStartFlexTemplateOperator(
        task_id="launch",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={
            "launchParameter": {
                "jobName": "winnow-refresh-{{ ds_nodash }}",
                "containerSpecGcsPath": f"gs://{BUCKET}/winnow/templates/winnow.json",
                "parameters": {"command": "refresh", **ARGS},
                "environment": {
                    "tempLocation": f"gs://{BUCKET}/winnow/tmp",
                    "sdkContainerImage": IMAGE,
                    "maxWorkers": 50,
                },
            }
        },
    )
    finalize = KubernetesPodOperator(
        task_id="finalize",
        name="winnow-finalize",
        image=IMAGE,
        cmds=["winnow"],
        arguments=["refresh", "--finalize-only", "--quiet", *(f"--{k}={v}" for k, v in ARGS.items())],
        get_logs=True,
    )
    launch >> finalize
