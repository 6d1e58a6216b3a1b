"""``airflow-consent ledger``: verify the decision ledger's hash chain and signatures, show it, export it.

Cheap to import: SQLAlchemy and Airflow's configuration load only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pydantic import BaseModel

    from airflow_consent.ledger import Ledger, LedgerRecord

app = typer.Typer(help="The decision ledger: verify its hash chain, show it, export it.", no_args_is_help=True)

EXIT_TAMPERED = 1
EXIT_BROKEN = 2

CHAINS = ("decisions", "usage", "audit", "purge")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="ledger database URL; default: [consent] ledger_url", show_default=False)
]


@app.command()
def verify(
    url: UrlOption = None,
    anchor: Annotated[str | None, typer.Option(help="an earlier head SEQ:sha256:HEX kept elsewhere")] = None,
    file: Annotated[Path | None, typer.Option(help="verify an exported JSON Lines file instead")] = None,
) -> None:
    """Recompute the hash chain and check each record's signature with this machine's ledger key (when it
    has one). Exit 0 intact, 1 tampered (each problem named by seq), 2 unreadable."""
    from airflow_consent.errors import ConsentError
    from airflow_consent.ledger.verify import Head

    try:
        pinned = Head.parse(anchor) if anchor else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--anchor") from exc
    try:
        if file is not None:
            where, result = str(file), _verify_file(file, pinned)
        else:
            with _ledger(url) as ledger:
                where, result = ledger.display_url, ledger.verify(anchor=pinned)
    except (ConsentError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BROKEN) from exc
    if result.ok and not result.checked:
        typer.echo(f"ledger OK: empty, no records in {where}")
        return
    if result.ok:
        typer.echo(f"ledger OK: {result.checked} record(s) in {where}, head {result.head_seq}:{result.head_hash}")
        typer.echo(f"signatures: {result.signatures}")
        return
    typer.echo(f"ledger TAMPERED: {len(result.problems)} problem(s) in {result.checked} record(s) of {where}")
    for problem in result.problems:
        typer.echo(f"  {problem}")
    typer.echo(f"signatures: {result.signatures}")
    raise typer.Exit(EXIT_TAMPERED)


@app.command()
def show(
    url: UrlOption = None,
    dag_id: Annotated[str | None, typer.Option(help="only this DAG")] = None,
    run_id: Annotated[str | None, typer.Option(help="only this DAG run")] = None,
    limit: Annotated[int, typer.Option(min=1, help="the latest N records")] = 50,
) -> None:
    """The latest decisions as a table: who asked, which partition, allow or deny, and why."""
    from rich.console import Console

    from airflow_consent.errors import ConsentError

    try:
        with _ledger(url) as ledger:
            found = ledger.records(dag_id=dag_id, run_id=run_id, limit=limit)
    except ConsentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BROKEN) from exc
    console = Console()
    if not found:
        console.print(
            "no records" + (f" for DAG {dag_id!r}" if dag_id else "") + (f" run {run_id!r}" if run_id else "")
        )
        return
    console.print(_table(found))


@app.command()
def export(
    url: UrlOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write; default: stdout")] = None,
    dag_id: Annotated[str | None, typer.Option(help="only this DAG (decisions)")] = None,
    run_id: Annotated[str | None, typer.Option(help="only this DAG run (decisions)")] = None,
    chain: Annotated[
        str,
        typer.Option(
            help="decisions; usage (which training tasks used which partitions); audit (re-audits); purge "
            "(deletion certificates)"
        ),
    ] = "decisions",
) -> None:
    """Every record of a chain, all fields, one JSON object per line, in chain order."""
    import sys

    from airflow_consent.errors import ConsentError

    if chain not in CHAINS:
        raise typer.BadParameter(f"{chain!r} is not one of {', '.join(CHAINS)}", param_hint="--chain")
    if chain != "decisions" and (dag_id or run_id):
        raise typer.BadParameter("--dag-id and --run-id select decisions only", param_hint="--chain")
    try:
        with _ledger(url) as ledger:
            records: Iterable[BaseModel] = (
                ledger.iter_records(dag_id=dag_id, run_id=run_id)
                if chain == "decisions"
                else ledger.usage_records()[0]
                if chain == "usage"
                else ledger.audit_records()
                if chain == "audit"
                else ledger.purge_records()
            )
            stream = output.open("w", encoding="utf-8") if output else sys.stdout
            try:
                count = 0
                for record in records:
                    stream.write(record.model_dump_json() + "\n")
                    count += 1
            finally:
                if output:
                    stream.close()
    except (ConsentError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BROKEN) from exc
    if output:
        typer.echo(f"exported {count} record(s) to {output}", err=True)


@app.command()
def head(url: UrlOption = None) -> None:
    """Print the head SEQ:HASH; keep it outside the database and pass it to ``verify --anchor`` later."""
    from airflow_consent.errors import ConsentError

    try:
        with _ledger(url) as ledger:
            typer.echo(str(ledger.head()))
    except ConsentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BROKEN) from exc


def _ledger(url: str | None) -> Ledger:
    from airflow_consent.ledger import Ledger

    return Ledger(url)


def _verify_file(path: Path, anchor):
    """Verify an export: the chain within it; its last record stands in for the head."""
    import json

    from airflow_consent.config import settings
    from airflow_consent.ledger import LedgerRecord
    from airflow_consent.ledger.keys import deployment_key
    from airflow_consent.ledger.verify import verify_chain

    with path.open(encoding="utf-8") as lines:
        rows = [LedgerRecord.model_validate(json.loads(line)).to_row() for line in lines if line.strip()]
    where = {row["record_hash"]: row["seq"] for row in rows}
    key = deployment_key(settings().ledger_secret, create=False)
    return verify_chain(rows, head=None, find_seq=where.get, anchor=anchor, head_required=False, key=key)


def _table(records: list[LedgerRecord]):
    from rich.table import Table
    from rich.text import Text

    purposes = sorted({r.purpose for r in records})
    title = f"consent ledger, seq {records[0].seq}..{records[-1].seq}"
    if len(purposes) == 1:
        title += f", purpose {purposes[0]}"
    table = Table(title=title, header_style="bold", expand=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("dag.task", overflow="fold")
    table.add_column("run", overflow="fold")
    if len(purposes) > 1:
        table.add_column("purpose", overflow="fold")
    table.add_column("partition", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("rules", overflow="fold")
    table.add_column("fingerprint", no_wrap=True)
    for record in records:
        verdict = Text("allow", style="green") if record.allow else Text("deny", style="bold red")
        if record.mode != "deny":
            verdict.append(f" ({record.mode})", style="yellow")
        cells: list[str | Text] = [
            str(record.seq),
            record.recorded_at.strftime("%m-%d %H:%M:%S"),
            f"{record.dag_id or '-'}.{record.task_id or '-'}",
            record.run_id or "-",
            *([record.purpose] if len(purposes) > 1 else []),
            record.partition_id,
            verdict,
            ", ".join(record.rule_ids) or "-",
            record.fingerprint.removeprefix("sha256:")[:10],
        ]
        table.add_row(*cells)
    return table
