"""``airflow-consent``: check datasets from a terminal, read gate reports, provision OPA."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

app = typer.Typer(
    help="Consent and provenance gates for ML training, decided by Open Policy Agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

EXIT_DENIED = 1
EXIT_BROKEN = 2

from airflow_consent.ledger_cli import app as ledger_app  # noqa: E402
from airflow_consent.policy_cli import app as policy_app  # noqa: E402
from airflow_consent.policy_cli import reference_app  # noqa: E402

app.add_typer(ledger_app, name="ledger")
app.add_typer(policy_app, name="policy")
app.add_typer(reference_app, name="reference")


@app.command()
def check(
    datasets: Annotated[list[str], typer.Argument(help="dataset URIs (hive-partitioned)")],
    purpose: Annotated[str, typer.Option(help="purpose id from the taxonomy")],
    where: Annotated[list[str], typer.Option("--where", help="partition filter KEY=VALUE (repeat to AND)")] = [],  # noqa: B006
    opa_conn_id: Annotated[
        str | None, typer.Option(help="an 'opa' Airflow connection; default: [consent] opa_conn_id, else local opa")
    ] = None,
    policy_path: Annotated[
        str | None,
        typer.Option(help="policies for the local engine; default: [consent] policy_path, else the shipped ones"),
    ] = None,
    enforcement: Annotated[
        str | None,
        typer.Option(
            help="deny, warn or dryrun for rules [consent] rule_enforcement does not set; default: [consent] "
            "enforcement"
        ),
    ] = None,
    dataset_config_path: Annotated[
        str | None,
        typer.Option(
            help="directory of <dataset>.json evidence configurations; default: [consent] dataset_config_path"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Run the gate outside Airflow, with the settings a gate task would have (these options in place of
    its arguments; nothing is recorded). Exit 0 passes, 1 blocked, 2 engine or configuration error."""
    import dataclasses

    from airflow_consent.config import settings
    from airflow_consent.enforcement import check_mode, outcome
    from airflow_consent.errors import ConsentConfigurationError, EngineError, NoPartitionsFound
    from airflow_consent.models import GateRequest, Requester
    from airflow_consent.run import GateArguments, progress_log, resolve, run_gate

    partition_filter = [_equality(term) for term in where] or None
    request = GateRequest(
        purpose=purpose, requested_by=Requester(kind="cli", id="airflow-consent check"), evaluated_at=datetime.now(UTC)
    )
    try:
        mode = check_mode(enforcement, "--enforcement") if enforcement else None
        arguments = GateArguments(
            opa_conn_id=opa_conn_id, policy_path=policy_path, enforcement=mode, dataset_config_path=dataset_config_path
        )
        config = dataclasses.replace(settings(), pinned_task_arguments=())  # a policy author may try anything
        resolved = resolve(arguments, config)
        report = run_gate(
            request,
            resolved.specs([(uri, None) for uri in datasets]),
            resolved,
            partition_filter=partition_filter,
            record=False,
            logger=progress_log(as_json),
        )
    except (ConsentConfigurationError, NoPartitionsFound, EngineError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BROKEN) from exc
    _print_report(report.model_dump(mode="json"), as_json)
    raise typer.Exit(0 if outcome(report, "fail").passed else EXIT_DENIED)


@app.command()
def report(
    dag_id: Annotated[str, typer.Argument(help="the DAG whose gate report to show")],
    run_id: Annotated[str | None, typer.Option(help="default: the latest run with a report")] = None,
    task_id: Annotated[str | None, typer.Option(help="the gate's task id; default: any gate")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Show a gate report stored in Airflow's metadata database (XCom key ``gate_report``)."""
    from airflow.models.xcom import XComModel
    from airflow.settings import Session
    from sqlalchemy import select

    from airflow_consent.operators.consent import XCOM_REPORT_KEY

    query = select(XComModel).where(XComModel.dag_id == dag_id, XComModel.key == XCOM_REPORT_KEY)
    if run_id:
        query = query.where(XComModel.run_id == run_id)
    if task_id:
        query = query.where(XComModel.task_id == task_id)
    with Session() as session:  # type: ignore[misc]  # airflow.settings.Session is None until Airflow is configured
        row = session.scalars(query.order_by(XComModel.timestamp.desc()).limit(1)).first()
        value = XComModel.deserialize_value(row) if row else None
    if value is None:
        typer.echo(f"no gate report for DAG {dag_id!r}" + (f" run {run_id!r}" if run_id else ""), err=True)
        raise typer.Exit(EXIT_BROKEN)
    _print_report(json.loads(value) if isinstance(value, str) else value, as_json)


@app.command()
def audit(
    purpose: Annotated[str | None, typer.Option(help="only uses cleared for this purpose")] = None,
    since: Annotated[
        str | None, typer.Option(help="only uses recorded at or after this ISO 8601 date or time (UTC when no zone)")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="ledger database URL; default: [consent] ledger_url")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the audit as JSON")] = False,
) -> None:
    """Re-audit what training used: every partition a training task was cleared on, against today's
    revocation lists and policies; names the runs, tasks and models affected and records the audit in
    the ledger. Exit 0 nothing affected, 1 affected (or a used partition changed or gone), 2 broken."""
    from airflow_consent.audit import parse_since, render_audit, run_audit
    from airflow_consent.errors import ConsentError

    try:
        report = run_audit(purpose=purpose, since=parse_since(since), ledger_url=url)
    except (ConsentError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BROKEN) from exc
    typer.echo(report.model_dump_json(indent=2) if as_json else render_audit(report))
    raise typer.Exit(0 if report.outcome == "clean" else EXIT_DENIED)


@app.command()
def purge(
    dataset: Annotated[str, typer.Argument(help="the dataset URI (hive-partitioned Parquet, local)")],
    partition: Annotated[
        list[str], typer.Option("--partition", help="a partition id, e.g. profile_photos/source=a/year=2025 (repeat)")
    ],
    dataset_config_path: Annotated[
        str | None,
        typer.Option(
            help="directory of <dataset>.json evidence configurations; default: [consent] dataset_config_path"
        ),
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="ledger database URL; default: [consent] ledger_url")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the purge as JSON")] = False,
) -> None:
    """Remove the rows of subjects on the dataset's revocation list from each partition (files rewritten
    atomically, Parquet metadata kept) and record a deletion certificate in the ledger naming the uses
    of the bytes before (the models to retrain). Exit 0 done (or nothing to remove), 2 error."""
    from airflow_consent.errors import ConsentError
    from airflow_consent.purge import purge_partitions, render_purge

    try:
        report = purge_partitions(dataset, partition, dataset_config_path=dataset_config_path, ledger_url=url)
    except (ConsentError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BROKEN) from exc
    typer.echo(report.model_dump_json(indent=2) if as_json else render_purge(report))


@app.command("opa-path")
def opa_path() -> None:
    """Print the pinned OPA binary's path, building or downloading it first if needed."""
    from airflow_consent.engines.opa_binary import ensure_opa

    typer.echo(str(ensure_opa(log=lambda line: typer.echo(line, err=True))))


def _equality(term: str) -> tuple[str, str, str]:
    key, sep, value = term.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{term!r} is not KEY=VALUE", param_hint="--where")
    return (key, "=", value)


def _print_report(report: dict, as_json: bool) -> None:
    from airflow_consent.models import GateReport
    from airflow_consent.report import render_text

    typer.echo(json.dumps(report, indent=2) if as_json else render_text(GateReport.model_validate(report)))
